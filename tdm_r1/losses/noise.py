"""Noise levels and forward re-noising from a trajectory boundary (TDM / TDM-R1).

Shapes: sigmas are (N,) in [0, 1]; latents are (N, C, h, w).
Flow convention: x_s = (1 - s) x0 + s * noise, v = noise - x0; the SD3 "timestep" is 1000 * s.
"""

from __future__ import annotations

import torch

from tdm_r1.flow import per_sample, shift_sigma, unshift_sigma


def sample_sigma_above(
    sigma_n: torch.Tensor,
    *,
    t_min: float = 0.0,
    shift: float = 1.0,
    margin: float = 20.0,
    generator: torch.Generator | None = None,
    u: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw sigma_tau above each boundary sigma_n the way TDM-R1's code does.

    The lower bound is taken in the scheduler's (shifted) timesteps, ``max(1000 sigma_n, t_min)``,
    as the public code compares ``t_min_dgpo`` with the shifted scheduler timesteps; it is then
    mapped to un-shifted time, moved up by ``margin`` timesteps, and t is drawn uniformly in
    ``[lo, 1000]`` of un-shifted time and shifted back. With shift 3 the smallest query noise level
    for ``t_min`` = 300 / 550 / 250 / 400 is 0.337 / 0.573 / 0.290 / 0.431.

    Args:
        sigma_n: (N,) boundary noise levels (0 for the final clean sample).
        t_min: lower bound in shifted timesteps (0..1000), e.g. ``t_min_dgpo`` = 300.
        shift: the model's flow shift (3 for SD3.5-M at 512 px in TDM-R1's code, 1 for the toy).
        margin: un-shifted timesteps kept above the bound (20 in TDM-R1's code).
        u: (N,) uniform [0, 1) draws to use instead of ``generator`` (per-sample or per-group seeding).

    Returns:
        (N,) sigma_tau in (sigma_n, 1].
    """
    s_n = sigma_n.float().cpu()
    lo_sigma = torch.clamp(s_n, min=float(t_min) / 1000.0)
    lo = torch.clamp(unshift_sigma(lo_sigma, shift) * 1000 + margin, max=999.0)
    if u is None:
        u = torch.rand(sigma_n.shape, generator=generator)
    t = lo + (1000.0 - lo) * u.float().cpu()
    return shift_sigma(t / 1000, shift).to(sigma_n.device)


def renoise_coefficients(sigma_n: torch.Tensor, sigma_tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha = (1 - s_tau) / (1 - s_n), beta = sqrt(s_tau^2 - (s_n alpha)^2), both (N,).

    With x_n = (1 - s_n) x0 + s_n n, ``alpha x_n + beta eps`` has the marginal of x at s_tau:
    signal (1 - s_tau) x0 and noise variance (alpha s_n)^2 + beta^2 = s_tau^2.
    """
    if bool((sigma_tau < sigma_n).any()) or bool((sigma_n >= 1).any()):
        raise ValueError("need sigma_n <= sigma_tau and sigma_n < 1")
    alpha = (1 - sigma_tau) / (1 - sigma_n)
    beta = torch.sqrt(torch.clamp(sigma_tau**2 - (sigma_n * alpha) ** 2, min=0.0))
    return alpha, beta


def renoise(
    x_n: torch.Tensor, sigma_n: torch.Tensor, sigma_tau: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diffuse boundary latents x_n (N,C,h,w) at sigma_n forward to sigma_tau with noise ``eps``.

    Returns:
        (x_tau, alpha, beta): x_tau = alpha x_n + beta eps, and the (N,) coefficients.
    """
    alpha, beta = renoise_coefficients(sigma_n, sigma_tau)
    return per_sample(alpha, x_n) * x_n + per_sample(beta, x_n) * eps, alpha, beta


def surrogate_velocity_target(
    x_n: torch.Tensor,
    sigma_n: torch.Tensor,
    sigma_tau: torch.Tensor,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
) -> torch.Tensor:
    """Velocity target of the surrogate's denoising loss at x_tau = alpha x_n + beta eps.

    ``v* = -x_n / (1 - s_n) + (eps / beta) (s_tau + s_n^2 alpha / (1 - s_n))`` (TDM-R1's code,
    derived from its Eq. 9 with eta = 0). For s_n = 0 (x_n clean) it is the plain flow-matching
    target ``eps - x_n``.
    """
    sn, st, a, b = (per_sample(t, x_n) for t in (sigma_n, sigma_tau, alpha, beta))
    return -x_n / (1 - sn) + (eps / b) * (st + sn**2 * a / (1 - sn))
