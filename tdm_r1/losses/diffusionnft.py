"""DiffusionNFT: reward-weighted positive / negative flow matching on the forward process.

No trajectories and no likelihoods: a rollout (any sampler, CFG-free) gives clean samples x0 and
their rewards; training noises x0 to ``x_t = (1 - t) x0 + t noise`` and compares two implicit
policies built from the trained velocity v and the frozen sampling ("old") velocity v_old
(DiffusionNFT, arXiv:2509.16117; code NVlabs/DiffusionNFT@24af555,
``scripts/train_nft_sd3.py``):

    v+ = (1 - beta) v_old + beta v      (positive policy)
    v- = (1 + beta) v_old - beta v      (negative policy)
    x0+- = x_t - t v+-
    L+- = mean((x0+- - x0)^2) / sg(mean|x0+- - x0|)       (per sample; adaptive weighting, floored at 1e-5)
    loss = adv_clip * mean(r L+ / beta + (1 - r) L- / beta)  +  kl_beta mean((v - v_ref)^2)

with the optimality probability ``r = clamp(A / (2 adv_clip) + 0.5, 0, 1)`` from the advantage A.
High-reward samples pull v+ (hence v) toward their flow-matching target ``noise - x0``; low-reward
ones pull v- toward theirs, which pushes v away. At v = v_old the gradient in v is proportional to
``(2 r - 1)`` (derived from the loss above), so r = 0.5 (A = 0) teaches nothing even though the loss
is not 0.

Shapes: latents / velocities (N, C, h, w); sigmas, advantages, r (N,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tdm_r1.flow import per_sample, x0_from_v


@dataclass(frozen=True)
class DiffusionNftHParams:
    """DiffusionNFT's SD3.5-Medium recipe (defaults: GenEval), NVlabs/DiffusionNFT@24af555 ``config/nft.py``.

    Attributes:
        beta: NFT's trust-region beta (``config.beta``: 1.0 GenEval / PickScore / HPSv2, 0.1 OCR
            and multi-reward); smaller beta = larger policy move.
        kl_beta: weight of the KL to the base model (``config.train.beta`` = 1e-4; a different beta).
        adv_clip: advantages clipped to +-5; also the loss multiplier (``train_nft_sd3.py``).
        adv_std: "global" (``global_std = True``).
        decay_type: old-policy soft-update schedule (1 default, 2 OCR; :func:`old_policy_decay`).
        rollout_steps: deterministic 2nd-order DPM rollout steps (10; 25 multi-reward); the training
            noise levels are that grid's sigmas, a random ``int(steps * timestep_fraction)`` of them
            per sample with fresh noise per level.
        timestep_fraction: 0.99 (9 of 10 grid sigmas).
        guidance: 1.0 (CFG-free in rollout and training).
        group_size, groups_per_epoch: 24 images x 48 prompts per epoch.
        updates_per_epoch: optimizer steps per epoch (1; OCR 2).
        lr, weight_decay, grad_clip: AdamW 3e-4, 1e-4, clip 1.0 (LoRA r32 / alpha 64).
        ema_decay: evaluation EMA 0.9 every optimizer step.
    """

    beta: float = 1.0
    kl_beta: float = 1e-4
    adv_clip: float = 5.0
    adv_std: str = "global"
    decay_type: int = 1
    rollout_steps: int = 10
    timestep_fraction: float = 0.99
    guidance: float = 1.0
    group_size: int = 24
    groups_per_epoch: int = 48
    updates_per_epoch: int = 1
    lr: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.9

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"DiffusionNftHParams.beta must be > 0, got {self.beta}")
        if self.decay_type not in (1, 2):
            raise ValueError(f"DiffusionNftHParams.decay_type must be 1 or 2, got {self.decay_type}")


#: SD3.5-M presets by reward (NVlabs/DiffusionNFT@24af555 ``config/nft.py``, ``config/base.py``).
DIFFUSIONNFT_SD35M: dict[str, DiffusionNftHParams] = {
    "geneval": DiffusionNftHParams(beta=1.0),
    "ocr": DiffusionNftHParams(beta=0.1, decay_type=2, updates_per_epoch=2),
    "pickscore": DiffusionNftHParams(beta=1.0),
    "hpsv2": DiffusionNftHParams(beta=1.0),
    "multi-reward": DiffusionNftHParams(beta=0.1, rollout_steps=25),
}


def optimality_probability(adv: torch.Tensor, adv_clip: float = 5.0) -> torch.Tensor:
    """(N,) r in [0, 1] from advantages: ``clamp(A / (2 adv_clip) + 0.5, 0, 1)`` (A = 0 -> 0.5)."""
    return (adv.float().clamp(-adv_clip, adv_clip) / (2 * adv_clip) + 0.5).clamp(0.0, 1.0)


def old_policy_decay(step: int, decay_type: int = 1) -> float:
    """Decay d of the per-epoch soft update ``theta_old <- d theta_old + (1 - d) theta``.

    Type 1 (default): ``min(0.001 step, 0.5)``; type 2 (OCR): 0 for the first 75 steps, then
    ``min(0.0075 (step - 75), 0.999)``. Early on d ~ 0: sampling is on-policy.
    """
    if decay_type == 1:
        return min(0.001 * step, 0.5)
    if decay_type == 2:
        return 0.0 if step < 75 else min(0.0075 * (step - 75), 0.999)
    raise ValueError(f"decay_type must be 1 or 2, got {decay_type}")


@dataclass
class NftLoss:
    """Result of :func:`diffusionnft_loss`.

    Attributes:
        loss: scalar to minimise.
        policy: the weighted positive/negative term (after the ``adv_clip`` factor).
        positive, negative: batch means of the per-sample normalised errors L+ and L-.
        kl: ``mean((v - v_ref)^2)`` (0 when no reference is given).
        old_deviate: ``mean((v - v_old)^2)`` (0 when the learner equals the sampler).
    """

    loss: torch.Tensor
    policy: float
    positive: float
    negative: float
    kl: float
    old_deviate: float


def _normalised_error(x0_pred: torch.Tensor, x0: torch.Tensor, floor: float) -> torch.Tensor:
    """(N,) ``mean((x0_pred - x0)^2) / sg(mean|x0_pred - x0|)``: errors on the scale of |error|."""
    d = x0_pred - x0
    scale = d.detach().abs().flatten(1).mean(dim=1).clamp_min(floor)
    return (d**2).flatten(1).mean(dim=1) / scale


def diffusionnft_loss(
    v: torch.Tensor,
    v_old: torch.Tensor,
    x_t: torch.Tensor,
    sigma: torch.Tensor,
    x0: torch.Tensor,
    r: torch.Tensor,
    *,
    beta: float,
    adv_clip: float = 5.0,
    v_ref: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    floor: float = 1e-5,
) -> NftLoss:
    """DiffusionNFT's loss at one noise level per sample.

    Args:
        v: (N, C, h, w) trained velocity at x_t (with grad).
        v_old: (N, C, h, w) the sampling ("old") policy's velocity at x_t (detached here).
        x_t: (N, C, h, w) ``(1 - sigma) x0 + sigma noise``.
        sigma: (N,) or scalar noise level of x_t.
        x0: (N, C, h, w) clean rollout sample.
        r: (N,) optimality probabilities in [0, 1] (:func:`optimality_probability`).
        beta: NFT beta (> 0).
        adv_clip: the loss multiplier (the advantage clip, 5).
        v_ref: (N, C, h, w) the base model's velocity for the KL term (None: no KL).
        kl_beta: KL weight.
        floor: minimum of the adaptive weighting's scale.
    """
    if beta <= 0:
        raise ValueError(f"DiffusionNFT beta must be > 0, got {beta}")
    v32, old = v.float(), v_old.detach().float()
    x_t32, x032 = x_t.float(), x0.detach().float()
    s = sigma.float() if isinstance(sigma, torch.Tensor) else torch.tensor(float(sigma))
    s = per_sample(s.to(x_t32.device), x_t32)
    v_pos = (1 - beta) * old + beta * v32
    v_neg = (1 + beta) * old - beta * v32
    l_pos = _normalised_error(x0_from_v(x_t32, s, v_pos), x032, floor)
    l_neg = _normalised_error(x0_from_v(x_t32, s, v_neg), x032, floor)
    rr = r.float().to(l_pos.device)
    policy = adv_clip * (rr * l_pos / beta + (1 - rr) * l_neg / beta).mean()
    loss = policy
    kl_value = 0.0
    if v_ref is not None and kl_beta:
        kl = ((v32 - v_ref.detach().float()) ** 2).mean()
        loss = loss + kl_beta * kl
        kl_value = float(kl.detach())
    return NftLoss(
        loss=loss,
        policy=float(policy.detach()),
        positive=float(l_pos.detach().mean()),
        negative=float(l_neg.detach().mean()),
        kl=kl_value,
        old_deviate=float(((v32.detach() - old) ** 2).mean()),
    )
