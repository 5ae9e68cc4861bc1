"""DGPO applied directly to the model being improved: group preference on denoising errors.

DGPO (arXiv:2510.08425; code Luo-Yihong/DGPO@01ceb4b ``scripts/train_sd3_dgpo.py``) trains a diffusion
model with a group Bradley-Terry loss whose implicit reward is the drop of its denoising error against
a reference. Per sample i of a group g, at a noise level t with ``x_t = (1 - t) x0_i + t noise``
(noise shared by the group) and the flow-matching target ``v* = noise - x0_i``:

    l_i     = mean((v* - v_theta(x_t))^2)          l_ref_i = the same for the reference
    w_g     = sigmoid(beta_dpo / G * sum_{i in g} A_i (l_i - l_ref_i))   (detached, all-reduced)
    loss    = mean_i(w_g(i) A_i l_i)  +  kl_beta mean((v_theta - v_ref)^2)

with a PPO-style clip against a fast-EMA "old" copy (``ratio = exp(l_old - l_i)``). This is the
same loss TDM-R1 uses for its surrogate reward model, so :func:`dgpo_loss` is a thin wrapper over
:func:`tdm_r1.losses.tdm_r1.surrogate_loss` with TDM-R1's extra stabilisers switched off (no
reference-drift clip, no time weight; the L2 anchor is DGPO's KL term).

Shapes: latents / velocities (N, C, h, w); per-sample quantities (N,).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tdm_r1.losses.tdm_r1 import SurrogateLoss, surrogate_loss


@dataclass(frozen=True)
class DgpoHParams:
    """DGPO's SD3.5-Medium recipe (defaults: Mode 1, OCR / GenEval), Luo-Yihong/DGPO@01ceb4b config/dgpo.py.

    Attributes:
        beta_dpo: sigmoid temperature (100 OCR / GenEval, 10 PickScore; 2000 with ``use_ema_ref``).
        clip_range: PPO-style clip of the denoising-error ratio (1e-2; 5e-2 PickScore).
        kl_beta: KL to the reference (``train.beta`` 0.02; 0.001 PickScore).
        adv_clip, adv_std: advantage clip 5; "group" std for GenEval, "global" otherwise.
        guidance: rollout CFG (4.5 Mode 1; 1.0 Mode 2); the policy trains its conditional velocity.
        ref_guidance: the reference's CFG (``kl_cfg``: 1.0 Mode 1; 4.5 Mode 2a).
        use_ema_ref: the fast EMA is also the DGPO reference (Mode 2b).
        rollout_steps: deterministic DPM-Solver rollout steps (10, flow shift 3).
        num_train_timesteps: M = 4 distinct grid indices per epoch, drawn from ``0..trunc_steps``.
        trunc_steps: 6 (GenEval 4): only the high-noise end of the grid is trained.
        switch_ema_ref: after this many optimizer steps the fast EMA samples the rollouts (200; GenEval 500).
        shared_noise: the members of a group share the training noise.
        group_size, groups_per_epoch: 16 x 8 (4-GPU preset; PickScore 24 x 8), one update per epoch.
        lr, weight_decay, grad_clip: AdamW 3e-4, 1e-4, 1.0 (LoRA r64 / alpha 128, bf16).
        ema_decay, ema_every: evaluation EMA 0.9 every 8 steps.
    """

    beta_dpo: float = 100.0
    clip_range: float = 1e-2
    kl_beta: float = 0.02
    adv_clip: float = 5.0
    adv_std: str = "global"
    guidance: float = 4.5
    ref_guidance: float = 1.0
    use_ema_ref: bool = False
    rollout_steps: int = 10
    num_train_timesteps: int = 4
    trunc_steps: int = 6
    switch_ema_ref: int = 200
    shared_noise: bool = True
    group_size: int = 16
    groups_per_epoch: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.9
    ema_every: int = 8

    def __post_init__(self) -> None:
        if self.num_train_timesteps > self.trunc_steps + 1:
            raise ValueError(
                f"DgpoHParams: num_train_timesteps {self.num_train_timesteps} > the {self.trunc_steps + 1} "
                "candidate indices 0..trunc_steps"
            )


#: SD3.5-M presets (Luo-Yihong/DGPO@01ceb4b: Mode 1 per reward from ``config/dgpo.py``, Mode 2a / 2b from
#: ``config/dgpo_wocfg.py`` / ``config/dgpo_wocfg_emaref.py``).
DGPO_SD35M: dict[str, DgpoHParams] = {
    "ocr": DgpoHParams(),
    "geneval": DgpoHParams(adv_std="group", trunc_steps=4, switch_ema_ref=500),
    "pickscore": DgpoHParams(beta_dpo=10.0, clip_range=5e-2, kl_beta=0.001, group_size=24),
    "wocfg": DgpoHParams(guidance=1.0, ref_guidance=4.5, clip_range=1e-3),
    "wocfg-emaref": DgpoHParams(
        guidance=1.0, ref_guidance=1.0, use_ema_ref=True, beta_dpo=2000.0, clip_range=1e-5, kl_beta=0.001
    ),
}


def train_step_indices(trunc_steps: int, num: int, rng: random.Random) -> list[int]:
    """``num`` distinct rollout-grid indices from ``0..trunc_steps`` (drawn once per epoch, shared by all ranks)."""
    if num > trunc_steps + 1:
        raise ValueError(f"cannot draw {num} distinct indices from 0..{trunc_steps}")
    return rng.sample(range(trunc_steps + 1), num)


def ema_ref_decay(step: int) -> float:
    """Decay of DGPO's fast EMA (the "old" policy) after optimizer step ``step``: ``min(0.3, 0.001 step)``."""
    return min(0.3, 0.001 * step)


def denoising_errors(
    target: torch.Tensor,
    v: torch.Tensor,
    v_ref: torch.Tensor,
    v_old: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (N,) errors for :func:`dgpo_loss` from velocities (N, C, h, w) at one x_t.

    Returns:
        (l, l_ref, l_old, reg): ``mean((target - v)^2)`` (with grad), the reference's and the old
        copy's (detached; ``l_old = l`` detached when ``v_old`` is None, i.e. no clip), and
        ``reg = mean((v - v_ref)^2)`` (with grad).
    """
    per = lambda t: t.flatten(1).mean(dim=1)  # noqa: E731
    tgt, v32, ref = target.float(), v.float(), v_ref.detach().float()
    err = per((tgt - v32) ** 2)
    err_ref = per((tgt - ref) ** 2)
    err_old = err.detach() if v_old is None else per((tgt - v_old.detach().float()) ** 2)
    return err, err_ref, err_old, per((v32 - ref) ** 2)


def dgpo_loss(
    err: torch.Tensor,
    err_ref: torch.Tensor,
    err_old: torch.Tensor,
    reg: torch.Tensor,
    adv: torch.Tensor,
    group_index: torch.Tensor,
    *,
    n_groups: int,
    group_size: int,
    beta_dpo: float,
    clip_range: float,
    kl_beta: float,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    group_sum: torch.Tensor | None = None,
) -> SurrogateLoss:
    """DGPO's loss on the model itself (thin wrapper over :func:`~tdm_r1.losses.tdm_r1.surrogate_loss`).

    Args:
        err, err_ref, err_old, reg: (N,) from :func:`denoising_errors`.
        adv: (N,) group advantages.
        group_index: (N,) group of each sample in ``[0, n_groups)``; a group's members must all be
            in this call (or its ``group_sum`` given), since its weight needs the whole group.
        group_size: G of ``beta_dpo / G``.
        kl_beta: weight of ``mean(reg)`` (DGPO's KL to the reference).
        all_reduce, group_sum: see :func:`~tdm_r1.losses.tdm_r1.surrogate_loss`.
    """
    return surrogate_loss(
        err,
        err_ref,
        err_old,
        reg,
        adv,
        group_index,
        n_groups=n_groups,
        group_size=group_size,
        beta_dpo=beta_dpo,
        clip_range=clip_range,
        reg_threshold=float("inf"),
        anchor_beta=kl_beta,
        time_weight=1.0,
        all_reduce=all_reduce,
        group_sum=group_sum,
    )
