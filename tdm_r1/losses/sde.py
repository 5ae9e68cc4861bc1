"""Stochastic flow steps with Gaussian log-probabilities (Flow-GRPO's ODE-to-SDE conversion, and CPS).

Policy-gradient methods need a sampler whose every step is an explicit distribution. Flow-GRPO
replaces the flow ODE ``dx = v dt`` by the reverse-time SDE with the same marginal at every t
(arXiv:2505.05470; the form implemented in yifan123/flow_grpo@ac4c86e
``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py``):

    dx = [ v + (s_t^2 / (2 t)) (x + (1 - t) v) ] dt + s_t dw,    s_t = a sqrt(t / (1 - t)),

where ``x + (1 - t) v`` is the implied noise prediction, i.e. ``-t`` times the score. One
Euler-Maruyama step from t to t' < t (dt = t' - t) is the Gaussian
``N(mu, std^2 I)`` with ``mu = x + dt [v + (s_t^2/(2t)) (x + (1-t) v)]`` and ``std = s_t sqrt(|dt|)``.
At t = 1, ``t / (1 - t)`` diverges, so the denominator uses the grid's largest sigma below 1
(``sigma_max``: the second boundary of the grid), as the public code does.

CPS (coefficients-preserving sampling, arXiv:2509.05952; in yifan123/flow_grpo@54809b5
``sd3_sde_with_logprob.py``, used by Flow-GRPO-Fast) is the DDIM-like step
``mu = (1 - t') x0_hat + sqrt(t'^2 - std^2) eps_hat`` with ``std = t' sin(a pi / 2)``; its
"log-probability" is ``-mean((x' - mu)^2)`` without constants or variance, so its ratios live on
a different scale than Flow-SDE ones (never mix their clip ranges).

Conventions: ``x_t = (1 - t) x0 + t noise``, ``v = noise - x0`` (:mod:`tdm_r1.flow`); t is the
sigma. Everything is computed in float32 (the public code up-casts because bf16 overflowed here).
Shapes: latents (N, C, h, w); a sigma is a float, a 0-d tensor or an (N,) tensor; per-sample
outputs are (N,). Log-probabilities are **averaged over latent elements** by default, as the
public code does (``reduction="mean"``); ``"sum"`` gives the true log-density of the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from tdm_r1.flow import per_sample, x0_from_v

SdeKind = Literal["flow", "cps"]
Reduction = Literal["mean", "sum"]
SDE_KINDS: tuple[str, ...] = ("flow", "cps")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _t(value: Any, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a float32 tensor on ``like``'s device, shaped to broadcast over ``like`` (N, ...)."""
    return per_sample(torch.as_tensor(value, dtype=torch.float32, device=like.device), like)


def _reduce(x: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return x.flatten(1).mean(dim=1)
    if reduction == "sum":
        return x.flatten(1).sum(dim=1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def flow_sde_scale(sigma: Any, noise_level: float, *, sigma_max: float | None = None) -> torch.Tensor:
    """Flow-GRPO's diffusion coefficient ``s_t = a sqrt(t / (1 - t))`` (float32, shape of ``sigma``).

    Args:
        sigma: t, the current noise level(s), in (0, 1].
        noise_level: a (0.7 in the SD3.5-M presets; 0 gives the ODE).
        sigma_max: the denominator's t where t = 1 (the grid's second sigma, e.g. 0.960 on the
            10-step shift-3 grid); required when some ``sigma`` is 1.
    """
    t = torch.as_tensor(sigma, dtype=torch.float32)
    at_one = t >= 1
    if bool(at_one.any()):
        if sigma_max is None:
            raise ValueError(
                "flow_sde_scale: sigma = 1 makes t/(1-t) infinite; pass sigma_max (the grid's second sigma)"
            )
        denom = 1 - torch.where(at_one, torch.full_like(t, float(sigma_max)), t)
    else:
        denom = 1 - t
    return noise_level * torch.sqrt(t / denom)


def flow_sde_mean_std(
    x: torch.Tensor,
    sigma: Any,
    sigma_next: Any,
    v: torch.Tensor,
    noise_level: float,
    *,
    sigma_max: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and std of one Flow-SDE Euler-Maruyama step from ``sigma`` to ``sigma_next`` < ``sigma``.

    Returns:
        (mean (N, C, h, w) float32, std, scale): ``std = s_t sqrt(sigma - sigma_next)`` and the
        diffusion coefficient ``scale = s_t``, both broadcastable over x ((N, 1, 1, 1) or 0-d).
        With ``noise_level = 0`` the mean is exactly :func:`tdm_r1.flow.euler_step`.
    """
    x32, v32 = x.float(), v.float()
    t, t_next = _t(sigma, x32), _t(sigma_next, x32)
    scale = _t(flow_sde_scale(sigma, noise_level, sigma_max=sigma_max), x32)
    h = t - t_next  # = -dt > 0
    drift = v32 + (scale**2 / (2 * t)) * (x32 + (1 - t) * v32)
    mean = x32 - h * drift
    return mean, scale * torch.sqrt(h), scale


def cps_std(sigma_next: Any, noise_level: float) -> Any:
    """CPS's step std ``t' sin(a pi / 2)`` (a float or a tensor, like ``sigma_next``)."""
    return sigma_next * math.sin(noise_level * math.pi / 2)


def kl_scale(kind: str, sigma: float, sigma_next: float, noise_level: float, sigma_max: float | None = None):
    """0-d float32 tensor: the scale Flow-GRPO's KL divides by (``2 kl_scale^2``) for a step
    ``sigma -> sigma_next``; the same value :class:`SdeStep` carries as ``kl_scale``."""
    if kind == "flow":
        return flow_sde_scale(sigma, noise_level, sigma_max=sigma_max)
    return torch.tensor(cps_std(sigma_next, noise_level))


def cps_mean_std(
    x: torch.Tensor, sigma: Any, sigma_next: Any, v: torch.Tensor, noise_level: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (N, C, h, w) and std (broadcastable) of one CPS step: ``std = t' sin(a pi / 2)``.

    ``mean = (1 - t') x0_hat + sqrt(t'^2 - std^2) eps_hat``: the kept noise plus the fresh noise
    have total variance t'^2 when the predictions are exact, so the step keeps the
    ``(1 - t) x0 + t noise`` coefficients; at t' = 0 no noise enters. ``noise_level = 0`` is the
    Euler step (up to float rounding).
    """
    x32, v32 = x.float(), v.float()
    t, t_next = _t(sigma, x32), _t(sigma_next, x32)
    std = cps_std(t_next, noise_level)
    x0_hat = x0_from_v(x32, t, v32)
    eps_hat = x32 + (1 - t) * v32
    mean = (1 - t_next) * x0_hat + torch.sqrt((t_next**2 - std**2).clamp_min(0.0)) * eps_hat
    return mean, std


def gaussian_log_prob(
    x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """(N,) log N(x_next; mean, std^2 I), averaged (default) or summed over latent elements.

    Per element: ``-(x' - mu)^2 / (2 std^2) - log std - log sqrt(2 pi)``. ``x_next`` is detached
    (a stored sample); the gradient flows through ``mean``. Undefined (NaN) where std = 0.
    """
    d = x_next.detach().float() - mean
    std = std.float()
    elem = -(d**2) / (2 * std**2) - torch.log(std) - _HALF_LOG_2PI
    return _reduce(elem, reduction)


def cps_log_prob(x_next: torch.Tensor, mean: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """(N,) CPS's unnormalised log-probability ``-(x' - mu)^2`` averaged (or summed) over elements."""
    return _reduce(-((x_next.detach().float() - mean) ** 2), reduction)


@dataclass(frozen=True)
class SdeStep:
    """One stochastic step.

    Attributes:
        next: (N, C, h, w) float32 sample ``mean + std * noise``.
        mean: (N, C, h, w) float32 step mean (a function of v: keep it for the KL to the reference).
        std: broadcastable ((N, 1, 1, 1) or 0-d) step std.
        kl_scale: the scale Flow-GRPO's KL divides by: ``2 kl_scale^2`` (Flow-SDE: the diffusion
            coefficient s_t, not the step std; CPS: the step std, **unverified**).
        log_prob: (N,) log-probability of ``next`` (reduction as requested).
    """

    next: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    kl_scale: torch.Tensor
    log_prob: torch.Tensor


def _mean_std(
    kind: str,
    x: torch.Tensor,
    sigma: Any,
    sigma_next: Any,
    v: torch.Tensor,
    noise_level: float,
    sigma_max: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if kind == "flow":
        return flow_sde_mean_std(x, sigma, sigma_next, v, noise_level, sigma_max=sigma_max)
    if kind == "cps":
        mean, std = cps_mean_std(x, sigma, sigma_next, v, noise_level)
        return mean, std, std
    raise ValueError(f"unknown SDE kind {kind!r}; valid: {', '.join(SDE_KINDS)}")


def _log_prob(kind: str, x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduction: Reduction):
    if kind == "cps":
        return cps_log_prob(x_next, mean, reduction)
    return gaussian_log_prob(x_next, mean, std, reduction)


def sde_step(
    x: torch.Tensor,
    sigma: Any,
    sigma_next: Any,
    v: torch.Tensor,
    noise: torch.Tensor,
    *,
    noise_level: float,
    kind: SdeKind = "flow",
    sigma_max: float | None = None,
    reduction: Reduction = "mean",
) -> SdeStep:
    """One stochastic step x (N, C, h, w) at ``sigma`` -> ``sigma_next`` with velocity ``v``.

    Args:
        noise: (N, C, h, w) standard normal draw (the caller seeds it, e.g. with
            :func:`tdm_r1.seeds.rows_randn`, so a rollout is reproducible per sample).
        noise_level: a (Flow-SDE: 0.7 in the SD3.5-M presets; CPS: 0.8).
        kind: "flow" (Flow-GRPO's SDE) or "cps".
        sigma_max: Flow-SDE only: see :func:`flow_sde_scale`.
        reduction: log-probability over latent elements: "mean" (public code) or "sum".
    """
    mean, std, kl_scale = _mean_std(kind, x, sigma, sigma_next, v, noise_level, sigma_max)
    nxt = mean + std * noise.float()
    return SdeStep(
        next=nxt,
        mean=mean,
        std=std,
        kl_scale=kl_scale,
        log_prob=_log_prob(kind, nxt, mean, std, reduction),
    )


def step_log_prob(
    x: torch.Tensor,
    x_next: torch.Tensor,
    sigma: Any,
    sigma_next: Any,
    v: torch.Tensor,
    *,
    noise_level: float,
    kind: SdeKind = "flow",
    sigma_max: float | None = None,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability (N,) of a stored transition x -> x_next under a (new) velocity ``v``.

    The policy ratio of Flow-GRPO is ``exp(step_log_prob(new v) - stored log_prob)``; with the
    rollout's own ``v`` this reproduces :func:`sde_step`'s ``log_prob`` bit for bit (same code
    path), so the on-policy ratio is exactly 1. Gradients flow through ``v`` only.

    Returns:
        (log_prob (N,), mean (N, C, h, w)): the mean is returned for the KL to the reference.
    """
    mean, std, _ = _mean_std(kind, x, sigma, sigma_next, v, noise_level, sigma_max)
    return _log_prob(kind, x_next, mean, std, reduction), mean
