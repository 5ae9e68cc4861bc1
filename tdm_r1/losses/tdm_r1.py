"""TDM-R1 losses: generator (reverse KL + CFG reward + surrogate reward), fake score, surrogate.

All functions are pure: models are queried by the trainer, which passes their predictions.
Shapes: latents / x0 predictions (N, C, h, w); per-sample quantities (N,).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def _b(x: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * 3))


@dataclass
class GeneratorLoss:
    loss: torch.Tensor
    kl: float
    cfg: float
    rl: float


def generator_loss(
    x0_gen: torch.Tensor,
    *,
    cond_x0: torch.Tensor,
    uncond_x0: torch.Tensor,
    fake_x0: torch.Tensor,
    guided_x0: torch.Tensor,
    cfg_reward_scale: float,
    surrogate_x0: torch.Tensor | None = None,
    ref_x0: torch.Tensor | None = None,
    w_kl: float = 1.0,
    w_cfg: float = 1.0,
    w_rl: float = 0.0,
    eps: float = 1e-6,
) -> GeneratorLoss:
    """The generator's normalised regression loss (TDM / TDM-R1).

    Each term regresses ``x0_gen`` onto a stop-gradient target moved along a direction:

    * reverse KL (TDM):  ``kl_rev  = x0 + (cond_x0 - fake_x0)`` (teacher without CFG minus fake score);
    * CFG as reward:     ``cfg_rev = x0 + s (cond_x0 - uncond_x0)`` with ``s = cfg_reward_scale``;
    * surrogate reward:  ``rl_rev  = x0 + (surrogate_x0 - ref_x0)``.

    The KL and CFG terms are divided per sample by ``mean|x0 - guided_x0|`` (teacher with CFG),
    the reward term by ``mean|x0 - surrogate_x0|`` (DMD's adaptive weighting). A term's value is
    the squared length of its direction; its gradient w.r.t. ``x0_gen`` is ``-2 direction / norm``.

    Args:
        x0_gen: (N, C, h, w) generator x0 prediction, with grad.
        cond_x0, uncond_x0, guided_x0: teacher x0 predictions (conditional, unconditional, CFG).
        fake_x0: fake-score x0 prediction.
        surrogate_x0, ref_x0: surrogate (with its CFG) and frozen-reference x0 predictions, or None
            when the reward term is off.
        w_kl, w_cfg, w_rl: term weights (TDM-R1: 1, tdm_weight, 1 - tdm_weight on boundaries
            below ``trunc_steps``; tdm_weight, tdm_weight, 0 above; TDM distillation: 1, 1, 0).
    """
    x0 = x0_gen.float()
    base = x0.detach()
    norm = _b(_per_sample_mean((base - guided_x0.float()).abs()).clamp_min(eps))
    kl_dir = (cond_x0 - fake_x0).float()
    cfg_dir = cfg_reward_scale * (cond_x0 - uncond_x0).float()
    loss_kl = ((base + kl_dir - x0) ** 2 / norm).mean()
    loss_cfg = ((base + cfg_dir - x0) ** 2 / norm).mean()
    loss = w_kl * loss_kl + w_cfg * loss_cfg
    loss_rl_value = 0.0
    if w_rl:
        if surrogate_x0 is None or ref_x0 is None:
            raise ValueError("w_rl > 0 needs surrogate_x0 and ref_x0")
        rl_norm = _b(_per_sample_mean((base - surrogate_x0.float()).abs()).clamp_min(eps))
        rl_dir = (surrogate_x0 - ref_x0).float()
        loss_rl = ((base + rl_dir - x0) ** 2 / rl_norm).mean()
        loss = loss + w_rl * loss_rl
        loss_rl_value = float(loss_rl.detach())
    return GeneratorLoss(
        loss=loss, kl=float(loss_kl.detach()), cfg=float(loss_cfg.detach()), rl=loss_rl_value
    )


def fake_score_loss(
    v_fake: torch.Tensor,
    *,
    x_tau: torch.Tensor,
    x0_gen: torch.Tensor,
    sigma_tau: torch.Tensor,
    v_real: torch.Tensor | None = None,
    anchor: float = 0.02,
) -> torch.Tensor:
    """Denoising score matching of the fake score on generator samples, + a teacher anchor.

    ``|| (x_tau - x0_gen) / s_tau - v_fake ||^2 + anchor || v_real - v_fake ||^2``: the target is
    the flow velocity of ``x_tau`` with the generator's x0 as clean data; ``v_real`` is the frozen
    teacher without CFG (TDM-R1 anchors the fake score to it with weight 0.02).
    """
    target = (x_tau.float() - x0_gen.detach().float()) / _b(sigma_tau.float())
    loss = ((target - v_fake.float()) ** 2).mean()
    if anchor and v_real is not None:
        loss = loss + anchor * ((v_real.detach().float() - v_fake.float()) ** 2).mean()
    return loss


def group_preference_sums(
    adv: torch.Tensor, l_phi: torch.Tensor, l_ref: torch.Tensor, group_index: torch.Tensor, n_groups: int
) -> torch.Tensor:
    """(n_groups,) float64 ``sum_{i in g} A_i (l_phi_i - l_ref_i)`` (detached) of the samples given.

    Partial sums over a group's pieces (micro-batches, processes) add up to the whole-group sum.
    """
    contrib = (adv.detach() * (l_phi.detach() - l_ref.detach())).double()
    return torch.zeros(n_groups, dtype=torch.float64, device=contrib.device).scatter_add(
        0, group_index.to(contrib.device), contrib
    )


@dataclass
class SurrogateLoss:
    loss: torch.Tensor
    group_weight_mean: float
    #: std of the group weights over the groups present (0 when one group or all saturated alike)
    group_weight_std: float
    clipped_fraction: float
    drift: float
    drift_clip_active: bool


def surrogate_loss(
    l_phi: torch.Tensor,
    l_ref: torch.Tensor,
    l_old: torch.Tensor,
    reg: torch.Tensor,
    adv: torch.Tensor,
    group_index: torch.Tensor,
    *,
    n_groups: int,
    group_size: int,
    beta_dpo: float,
    clip_range: float,
    reg_threshold: float = 0.05,
    anchor_beta: float = 1e-3,
    time_weight: float = 1.0,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    group_sum: torch.Tensor | None = None,
) -> SurrogateLoss:
    """DGPO group-preference loss of the surrogate reward model, with TDM-R1's stabilisers.

    Per sample i (all (N,)): ``l_phi`` = mean ||v* - v_phi||^2 (with grad), ``l_ref`` the same for
    the frozen (or EMA) reference, ``l_old`` for the fast-EMA surrogate, ``reg`` = mean
    ||v_phi - v_ref||^2 (with grad), ``adv`` the group-normalised advantage.

    * group weight ``w_g = sigmoid(beta_dpo / G * sum_{i in g} A_i (l_phi_i - l_ref_i))``, detached
      and summed over processes by ``all_reduce`` (so every rank uses whole-group statistics);
    * loss ``mean_i(w_g(i) A_i l_phi_i)``: the gradient of ``-log sigmoid(-(beta_dpo/G) sum A (l_phi - l_ref))``
      up to a constant: good samples (A > 0) get a lower denoising error, bad ones a higher one;
    * PPO-style clip: with ``ratio = exp(l_old - l_phi)``, a sample with A > 0 and ratio > 1 + clip
      or A < 0 and ratio < 1 - clip is detached;
    * reference-drift clip: when the batch mean of ``reg`` exceeds ``reg_threshold``, samples that
      already beat the reference in their advantage's direction are detached;
    * L2 anchor ``anchor_beta * mean(reg)``; the total is multiplied by ``time_weight``.

    Args:
        group_index: (N,) int in [0, n_groups): each sample's group.
        group_sum: (n_groups,) whole-group sums from :func:`group_preference_sums` when this call
            sees only a piece of its groups (a group larger than a micro-batch); None = the groups
            are whole here (summed over processes by ``all_reduce``).
    """
    reduce = all_reduce or (lambda t: t)
    gi = group_index.to(l_phi.device)
    if group_sum is None:
        group_sum = reduce(group_preference_sums(adv, l_phi, l_ref, gi, n_groups))
    group_w = torch.sigmoid(beta_dpo / group_size * group_sum.to(l_phi.device)).float()
    weight = group_w[gi]
    present = group_w[torch.unique(gi)]

    ratio = torch.exp((l_old.detach() - l_phi.detach()).clamp(-20, 20))
    clipped = ((adv > 0) & (ratio > 1 + clip_range)) | ((adv < 0) & (ratio < 1 - clip_range))
    stats = reduce(
        torch.stack([reg.detach().sum().double(), torch.tensor(float(reg.numel()), dtype=torch.float64)])
    )
    drift = float(stats[0] / stats[1].clamp_min(1))
    drift_active = drift > reg_threshold
    if drift_active:
        beat = ((adv > 0) & (l_phi.detach() < l_ref.detach())) | (
            (adv < 0) & (l_phi.detach() > l_ref.detach())
        )
        clipped = clipped | beat
    l_eff = torch.where(clipped, l_phi.detach(), l_phi)
    loss = (weight * adv * l_eff).mean() + anchor_beta * reg.mean()
    return SurrogateLoss(
        loss=time_weight * loss,
        group_weight_mean=float(weight.mean()),
        group_weight_std=float(present.std(unbiased=False)) if present.numel() > 1 else 0.0,
        clipped_fraction=float(clipped.float().mean()),
        drift=drift,
        drift_clip_active=drift_active,
    )
