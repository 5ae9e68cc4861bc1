"""Rectified-flow math, in one place: the sampler, the trainers and the losses all call these.

Convention: ``x_sigma = (1 - sigma) * x0 + sigma * noise`` and the velocity is ``v = noise - x0``,
so ``x0 = x - sigma * v`` and an Euler step from sigma to sigma' is ``x + (sigma' - sigma) * v``.
Classifier-free guidance is ``v_u + g * (v_c - v_u)`` (g = 1: conditional only). The functions are
pure arithmetic: they work on torch tensors (and :func:`shift_sigma` on numpy arrays and floats),
and this module imports no torch, so the torch-free schedule code can use it too.

Shapes: latents ``x`` are (N, C, h, w); a ``sigma`` is a float, a 0-d tensor, or an (N,) tensor
(one noise level per sample, broadcast over the latent's other dimensions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

A = TypeVar("A")


def shift_sigma(t: A, shift: Any) -> A:
    """Flow shift of un-shifted time t in [0, 1]: ``shift t / (1 + (shift - 1) t)``."""
    return shift * t / (1 + (shift - 1) * t)  # type: ignore[operator,return-value]


def unshift_sigma(sigma: A, shift: Any) -> A:
    """Inverse of :func:`shift_sigma`: ``sigma / (shift - (shift - 1) sigma)``."""
    return sigma / (shift - (shift - 1) * sigma)  # type: ignore[operator,return-value]


def per_sample(sigma: Any, like: torch.Tensor) -> Any:
    """``sigma`` shaped to broadcast over ``like`` (N, ...): an (N,) tensor becomes (N, 1, ..., 1)."""
    if getattr(sigma, "ndim", 0) == 1:
        return sigma.view(-1, *([1] * (like.ndim - 1)))
    return sigma


def noised(x0: torch.Tensor, sigma: Any, noise: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) the forward process ``(1 - sigma) * x0 + sigma * noise`` (flow matching's input;
    its velocity target is ``noise - x0``)."""
    s = per_sample(sigma, x0)
    return (1 - s) * x0 + s * noise


def x0_from_v(x: torch.Tensor, sigma: Any, v: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) the clean-sample prediction ``x - sigma * v``."""
    return x - per_sample(sigma, x) * v


def euler_step(x: torch.Tensor, sigma: Any, sigma_next: Any, v: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) one Euler step of the flow ODE: ``x + (sigma_next - sigma) * v``.

    Written as ``x - (sigma - sigma_next) * v``, which is the same float result (negation is exact).
    """
    return x - per_sample(sigma - sigma_next, x) * v


def cfg(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float, renorm: float | None = None
) -> torch.Tensor:
    """Classifier-free guidance ``v_u + g (v_c - v_u)``; also used on x0-predictions (it is affine).

    ``renorm``: each sample's norm is capped at ``renorm * |v_c|`` (norms over all latent
    elements), as ``ZImagePipeline(cfg_normalization=...)`` does.
    """
    v = v_uncond + guidance * (v_cond - v_uncond)
    if renorm is not None and renorm > 0:
        import torch

        limit = renorm * v_cond.flatten(1).norm(dim=1)
        norm = v.flatten(1).norm(dim=1)
        scale = torch.where(norm > limit, limit / norm, torch.ones_like(norm))
        v = v * per_sample(scale, v)
    return v
