"""Flow-GRPO: the clipped-ratio policy loss on SDE steps, its KL to the reference, its step choice.

Per trained step t of a trajectory i (Flow-GRPO, arXiv:2505.05470, as implemented in
yifan123/flow_grpo@ac4c86e ``scripts/train_sd3.py`` and
``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py``):

    rho = exp(log pi_theta(x_t' | x_t) - log pi_old(x_t' | x_t))          (per-element-mean log-probs)
    policy = max(-A rho, -A clip(rho, 1 - eps, 1 + eps))
    kl     = mean_elements((mu_theta - mu_ref)^2) / (2 s_t^2)              (s_t: the SDE's diffusion coefficient)
    loss   = mean over samples and trained steps of (policy + beta kl)

One advantage per trajectory (group-normalised reward, :func:`tdm_r1.losses.advantages.group_advantages`)
is broadcast to all its trained steps. The log-probs come from :mod:`tdm_r1.losses.sde`; because they
are per-element means, the ratio is the D-th root of the true density ratio, which is why the clip
ranges are 1e-4..1e-5. The KL divides by ``2 s_t^2`` and not by the step variance ``2 s_t^2 |dt|``
(the public code's choice, explained by the author in yifan123/flow_grpo issue #22: the late,
large-|dt| steps of SD3.5's grid would otherwise get little KL),
so it is the true Gaussian KL times ``|dt| / D``.

Shapes: the per-sample inputs are (N,) for one trained step or (N, T) for T steps of the same
trajectories (the mean over all entries is the per-timestep average the public code takes by
accumulating one backward per step); means are (N, C, h, w) or (N, T, C, h, w).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from tdm_r1.losses.sde import SDE_KINDS


@dataclass(frozen=True)
class FlowGrpoHParams:
    """Flow-GRPO's public SD3.5-Medium recipe (defaults: the GenEval / OCR presets).

    Sources: yifan123/flow_grpo ``config/base.py`` and ``config/grpo.py`` (base recipe, noise level,
    beta per reward, Fast / CPS presets; read at commits 54809b5 and 31c71b9) and
    ``scripts/train_sd3.py`` @ ac4c86e (trained steps).

    Attributes:
        noise_level: the SDE's a (Flow-SDE 0.7; CPS 0.8 in the Fast presets).
        sde: "flow" or "cps".
        clip_range: PPO clip on the per-element-mean ratio (1e-4; Fast presets 1e-5).
        adv_clip: advantages clipped to +-adv_clip (5).
        adv_std: "global" (``global_std=True`` in the SD3.5 presets) or "group".
        beta_kl: KL weight (0.04 GenEval/OCR, 0.01 PickScore, 0.02 CLIPScore; 0 in Fast presets).
        rollout_steps: SDE rollout steps (10: "denoising reduction"); eval uses ``eval_steps`` (40) ODE.
        timestep_fraction: full Flow-GRPO trains the first ``int(rollout_steps * fraction)`` steps (9 of 10).
        sde_window: Fast: SDE and training only on this many consecutive steps (0 = full Flow-GRPO).
        sde_window_range: Fast: the window lies inside steps [lo, hi).
        guidance: CFG scale in rollout and training (4.5; 1 in the no-CFG presets).
        group_size, groups_per_epoch: 24 images x 48 prompts per epoch.
        updates_per_epoch: optimizer steps per epoch (2).
        lr: AdamW learning rate (3e-4; LoRA r32 / alpha 64).
        ema_decay, ema_every: evaluation EMA (0.9 every 8 optimizer steps).
    """

    noise_level: float = 0.7
    sde: str = "flow"
    clip_range: float = 1e-4
    adv_clip: float = 5.0
    adv_std: str = "global"
    beta_kl: float = 0.04
    rollout_steps: int = 10
    eval_steps: int = 40
    timestep_fraction: float = 0.99
    sde_window: int = 0
    sde_window_range: tuple[int, int] = (0, 10)
    guidance: float = 4.5
    group_size: int = 24
    groups_per_epoch: int = 48
    updates_per_epoch: int = 2
    lr: float = 3e-4
    ema_decay: float = 0.9
    ema_every: int = 8

    def __post_init__(self) -> None:
        if self.sde not in SDE_KINDS:
            raise ValueError(f"FlowGrpoHParams.sde must be one of {', '.join(SDE_KINDS)}, got {self.sde!r}")
        if self.clip_range <= 0:
            raise ValueError(f"FlowGrpoHParams.clip_range must be > 0, got {self.clip_range}")


_GENEVAL_FAST = FlowGrpoHParams(
    noise_level=0.8,
    sde="cps",
    clip_range=1e-5,
    beta_kl=0.0,
    sde_window=3,
    sde_window_range=(0, 5),
    guidance=1.0,
)

#: SD3.5-M presets by reward (yifan123/flow_grpo@31c71b9 ``config/grpo.py``: beta per reward, and the
#: Fast no-CFG recipe).
FLOW_GRPO_SD35M: dict[str, FlowGrpoHParams] = {
    "geneval": FlowGrpoHParams(beta_kl=0.04),
    "ocr": FlowGrpoHParams(beta_kl=0.04),
    "pickscore": FlowGrpoHParams(beta_kl=0.01),
    "clipscore": FlowGrpoHParams(beta_kl=0.02),
    # geneval_sd3_fast_nocfg: CPS, a = 0.8, window 3 in steps [0, 5), clip 1e-5, beta 0, guidance 1
    "geneval-fast-nocfg": _GENEVAL_FAST,
    # pickscore_sd3_fast_nocfg: the same with 64 groups of 18
    "pickscore-fast-nocfg": replace(_GENEVAL_FAST, group_size=18, groups_per_epoch=64),
}


def train_steps(
    rollout_steps: int,
    *,
    timestep_fraction: float = 0.99,
    window: int = 0,
    window_range: tuple[int, int] | None = None,
    rng: random.Random | None = None,
) -> list[int]:
    """The rollout step indices that are stochastic and trained.

    * ``window = 0`` (full Flow-GRPO): the first ``int(rollout_steps * timestep_fraction)`` steps in
      order (9 of 10: the last, nearly noise-free step is never trained, its log-prob is too peaked);
    * ``window > 0`` (Flow-GRPO-Fast): ``window`` consecutive steps starting at
      ``s ~ UniformInt[lo, hi - window]`` (both ends included) for ``window_range = (lo, hi)``;
      the other steps are ODE. Draw ``s`` once per rollout batch from a seeded ``rng``.
    """
    if window <= 0:
        n = int(rollout_steps * timestep_fraction)
        if n < 1:
            raise ValueError(f"timestep_fraction {timestep_fraction} leaves no step of {rollout_steps}")
        return list(range(n))
    lo, hi = window_range if window_range is not None else (0, rollout_steps)
    if not (lo >= 0 and hi <= rollout_steps and hi - lo >= window):
        raise ValueError(
            f"SDE window of {window} steps does not fit in steps [{lo}, {hi}) of a {rollout_steps}-step rollout"
        )
    if rng is None:
        raise ValueError("a Flow-GRPO-Fast window needs a seeded rng (random.Random) to draw its start")
    start = rng.randint(lo, hi - window)
    return list(range(start, start + window))


@dataclass
class FlowGrpoLoss:
    """Result of :func:`flow_grpo_loss`.

    Attributes:
        loss: scalar, to minimise (policy + beta * kl).
        policy: the clipped policy term's value.
        kl: the KL term's value (before beta); 0 when beta = 0.
        approx_kl: ``0.5 mean((log pi - log pi_old)^2)`` (diagnostic).
        clipfrac: fraction of entries with ``|rho - 1| > clip_range``; split into
            ``clipfrac_gt_one`` (rho > 1 + eps) and ``clipfrac_lt_one`` (rho < 1 - eps).
        ratio_mean: mean of rho (should be 1 on-policy; below 1 signals GRPO-Guard's bias).
    """

    loss: torch.Tensor
    policy: float
    kl: float
    approx_kl: float
    clipfrac: float
    clipfrac_gt_one: float
    clipfrac_lt_one: float
    ratio_mean: float


def flow_grpo_kl(mean: torch.Tensor, ref_mean: torch.Tensor, kl_scale: torch.Tensor) -> torch.Tensor:
    """Per-entry KL to the reference as Flow-GRPO computes it: ``mean_elements((mu - mu_ref)^2) / (2 s^2)``.

    Args:
        mean: (N, C, h, w) or (N, T, C, h, w) step means of the policy (with grad).
        ref_mean: same shape, the reference's (adapter off) step means.
        kl_scale: the SDE's ``kl_scale`` (:class:`~tdm_r1.losses.sde.SdeStep`): 0-d, or one per
            entry ((N,) / (N, T), trailing singleton dims allowed, e.g. (N, 1, 1, 1)).

    Returns:
        (N,) or (N, T) KL values.
    """
    lead = 1 if mean.ndim == 4 else 2
    sq = ((mean.float() - ref_mean.detach().float()) ** 2).flatten(lead).mean(dim=-1)
    s = kl_scale.float().to(sq.device)
    if s.ndim > lead:
        s = s.reshape(s.shape[:lead])  # drop the trailing singleton (latent) dims
    if s.ndim not in (0, lead) or (s.ndim and s.shape != sq.shape):
        raise ValueError(
            f"kl_scale {tuple(kl_scale.shape)} must be 0-d or one scale per entry {tuple(sq.shape)}"
        )
    return sq / (2 * s**2)


def flow_grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    adv: torch.Tensor,
    *,
    clip_range: float,
    beta_kl: float = 0.0,
    mean: torch.Tensor | None = None,
    ref_mean: torch.Tensor | None = None,
    kl_scale: torch.Tensor | None = None,
) -> FlowGrpoLoss:
    """Flow-GRPO's clipped policy loss (+ KL) on a batch of trained steps.

    Args:
        log_prob: (N,) or (N, T) log-probs of the stored transitions under the current policy
            (:func:`~tdm_r1.losses.sde.step_log_prob`, with grad).
        old_log_prob: same shape, stored at rollout.
        adv: (N,) advantages (one per trajectory, broadcast over T) or the shape of ``log_prob``.
        clip_range: eps of ``clip(rho, 1 - eps, 1 + eps)``.
        beta_kl: KL weight; > 0 needs ``mean``, ``ref_mean`` and ``kl_scale`` (see :func:`flow_grpo_kl`).
    """
    if log_prob.shape != old_log_prob.shape:
        raise ValueError(
            f"log_prob {tuple(log_prob.shape)} and old_log_prob {tuple(old_log_prob.shape)} differ"
        )
    a = adv.float().to(log_prob.device)
    if a.ndim == 1 and log_prob.ndim == 2:
        a = a[:, None].expand_as(log_prob)
    if a.shape != log_prob.shape:
        raise ValueError(f"adv {tuple(adv.shape)} does not match log_prob {tuple(log_prob.shape)}")
    log_ratio = log_prob.float() - old_log_prob.detach().float()
    ratio = torch.exp(log_ratio)
    unclipped = -a * ratio
    clipped = -a * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    policy = torch.maximum(unclipped, clipped).mean()
    loss = policy
    kl_value = 0.0
    if beta_kl:
        if mean is None or ref_mean is None or kl_scale is None:
            raise ValueError("beta_kl > 0 needs mean, ref_mean and kl_scale")
        kl = flow_grpo_kl(mean, ref_mean, kl_scale).mean()
        loss = loss + beta_kl * kl
        kl_value = float(kl.detach())
    with torch.no_grad():
        r = ratio.detach()
        gt, lt = (r > 1 + clip_range).float(), (r < 1 - clip_range).float()
        return FlowGrpoLoss(
            loss=loss,
            policy=float(policy.detach()),
            kl=kl_value,
            approx_kl=float(0.5 * (log_ratio.detach() ** 2).mean()),
            clipfrac=float((gt + lt).mean()),
            clipfrac_gt_one=float(gt.mean()),
            clipfrac_lt_one=float(lt.mean()),
            ratio_mean=float(r.mean()),
        )
