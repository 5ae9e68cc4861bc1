"""The deterministic flow sampler shared by every model adapter, returning the full trajectory.

The flow convention and its math are in :mod:`tdm_r1.flow`; the schedules (sigmas of every
solver and spacing, NFE) in :mod:`tdm_r1.schedule`. Adapters hide each model's own convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tdm_r1.errors import ConfigError
from tdm_r1.flow import cfg, euler_step, x0_from_v
from tdm_r1.schedule import SOLVERS, FlowSchedule

if TYPE_CHECKING:
    import torch

    from tdm_r1.models.conditioning import Conditioning
    from tdm_r1.models.protocols import VelocityModel


@dataclass
class Trajectory:
    """A sampled trajectory.

    Attributes:
        latents: (N, K+1, C, h, w) float32: the initial noise, every boundary latent, the final sample.
        sigmas: (K+1,) float32, the boundaries (``latents[:, k]`` lives at ``sigmas[k]``).
        model_sigmas: (K,) float32, the sigma given to the transformer at step k.
        x0: (N, K, C, h, w) float32 x0-predictions ``x_k - sigma_k * v_k`` per step (guided velocity),
            or None when not requested.
        nfe: transformer passes per image actually run (CFG counts 2, zero-length steps 0).
    """

    latents: torch.Tensor
    sigmas: torch.Tensor
    model_sigmas: torch.Tensor
    x0: torch.Tensor | None
    nfe: int

    @property
    def final(self) -> torch.Tensor:
        """(N, C, h, w) the sample at sigma 0."""
        return self.latents[:, -1]


def sample(
    adapter: VelocityModel,
    cond: Conditioning,
    noise: torch.Tensor,
    schedule: FlowSchedule,
    *,
    guidance: float = 1.0,
    uncond: Conditioning | None = None,
    role: str | None = None,
    cfg_renorm: float | None = None,
    keep_grad: bool = False,
    return_x0: bool = True,
) -> Trajectory:
    """Run one deterministic flow ODE solve and return the whole trajectory.

    Args:
        adapter: any model with ``velocity`` (:class:`~tdm_r1.models.protocols.VelocityModel`).
        cond: conditioning for the N samples.
        noise: (N, C, h, w) the initial latent at ``schedule.sigmas[0]`` (see ``initial_noise``).
        schedule: the step boundaries, the sigmas the transformer is told, and the solver
            (:func:`tdm_r1.schedule.flow_schedule`).
        guidance: CFG scale g (tdmbench convention: ``v = v_u + g (v_c - v_u)``, 1 = off, one pass).
        uncond: null conditioning, required when ``guidance != 1``.
        role: LoRA role used for every pass (None = frozen base).
        cfg_renorm: optional CFG norm cap, see :func:`tdm_r1.flow.cfg`.
        keep_grad: keep the autograd graph (default: run under ``torch.no_grad``).
        return_x0: also return the per-step x0 predictions.

    Returns:
        :class:`Trajectory`; latents are float32 regardless of the model dtype.
    """
    import torch

    solver = schedule.solver
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
    sigmas = schedule.sigmas.detach().to("cpu", torch.float32)
    steps = sigmas.numel() - 1
    if steps < 1 or bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ConfigError(f"sigmas must be non-increasing with at least 2 entries, got {sigmas.tolist()}")
    model_sigmas = schedule.model_sigmas.detach().to("cpu", torch.float32)
    if model_sigmas.numel() != steps:
        raise ConfigError(f"model_sigmas must have {steps} entries, got {model_sigmas.numel()}")
    use_cfg = guidance != 1.0
    if use_cfg and uncond is None:
        raise ConfigError(f"guidance={guidance} needs `uncond` (adapter.null_conditioning(n))")
    if len(cond) != noise.shape[0] or (use_cfg and len(uncond) != noise.shape[0]):  # type: ignore[arg-type]
        raise ConfigError(f"conditioning for {len(cond)} samples but noise has batch {noise.shape[0]}")
    vel = adapter.velocity
    both = _cat_conditioning(uncond, cond) if use_cfg else None

    def velocity(x: torch.Tensor, s_model: float) -> torch.Tensor:
        n = x.shape[0]
        if not use_cfg:
            return vel(x, x.new_full((n,), s_model), cond, role=role).float()
        out = vel(torch.cat([x, x]), x.new_full((2 * n,), s_model), both, role=role).float()
        v_u, v_c = out[:n], out[n:]
        return cfg(v_c, v_u, guidance, cfg_renorm)

    ctx = torch.enable_grad() if keep_grad else torch.no_grad()
    x = noise.float()
    latents = [x]
    x0s: list[torch.Tensor] = []
    nfe = 0
    prev: tuple[torch.Tensor, float] | None = None  # DPM: (x0 of the previous step, its lambda)
    with ctx:
        for k in range(steps):
            s, s_next = float(sigmas[k]), float(sigmas[k + 1])
            if s == s_next:  # zero-length step: no transformer pass, nothing moves
                latents.append(x)
                if return_x0:
                    x0s.append(x if s == 0 else (x0s[-1] if x0s else x))
                continue
            v = velocity(x, float(model_sigmas[k]))
            nfe += 2 if use_cfg else 1
            x0 = x0_from_v(x, sigmas[k], v)
            if solver == "euler":
                x = euler_step(x, sigmas[k], sigmas[k + 1], v)
            else:
                x, prev = _dpm_step(x, x0, sigmas, k, prev, last=k == steps - 1)
            latents.append(x)
            if return_x0:
                x0s.append(x0)
    return Trajectory(
        latents=torch.stack(latents, dim=1),
        sigmas=sigmas,
        model_sigmas=model_sigmas,
        x0=torch.stack(x0s, dim=1) if return_x0 else None,
        nfe=nfe,
    )


def _cat_conditioning(uncond: Conditioning | None, cond: Conditioning) -> Conditioning:
    from tdm_r1.models.conditioning import Conditioning

    assert uncond is not None
    return Conditioning.cat([uncond, cond])


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    """log-SNR of flow sigmas: ``log(1 - s) - log(s)`` (+inf at s = 0)."""
    import torch

    return torch.log(1 - sigma) - torch.log(sigma)


def _dpm_step(
    x: torch.Tensor,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    k: int,
    prev: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    last: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One DPM-Solver++ (2M, midpoint) step with flow sigmas, as ``DPMSolverMultistepScheduler``.

    First order at the first step (no history) and at the last (``final_sigmas_type="zero"``),
    where it returns exactly ``x0``.
    """
    import torch

    s, s_next = sigmas[k], sigmas[k + 1]
    lam, lam_next = _lambda(s), _lambda(s_next)
    h = lam_next - lam
    alpha_next = 1 - s_next
    coef = alpha_next * (torch.exp(-h) - 1.0)
    ratio = s_next / s
    if prev is None or last:
        x_next = ratio * x - coef * x0
    else:
        x0_prev, lam_prev = prev
        r0 = (lam - lam_prev) / h
        d1 = (1.0 / r0) * (x0 - x0_prev)
        x_next = ratio * x - coef * x0 - 0.5 * coef * d1
    return x_next, (x0, lam)
