"""Deterministic flow samplers shared by every model adapter, returning the full trajectory.

Convention (everywhere in tdmbench): ``x_sigma = (1 - sigma) * x0 + sigma * noise`` and the
velocity is ``v = noise - x0``, so ``x0 = x - sigma * v`` and an Euler step is
``x_next = x + (sigma_next - sigma) * v``. Adapters hide each model's own convention.

Schedules reproduce the diffusers schedulers used by the reference pipelines, value for value:

* ``"euler"`` = ``FlowMatchEulerDiscreteScheduler``. Three spacings of the unshifted sigmas
  (``spacing``), then the static shift ``s' = shift*s / (1 + (shift-1)*s)`` (or, with ``mu``, the
  dynamic exponential shift ``e^mu / (e^mu + 1/s - 1)``), then a final 0:

  - ``"flowmatch"`` (SD3 pipeline): ``linspace(1, sigma_min, K)`` where ``sigma_min`` is the
    scheduler's own smallest training sigma, ``shift(1/1000)`` (so it is shifted twice);
  - ``"zero-terminal"`` (``ZImagePipeline`` up to diffusers 0.36, which sets
    ``scheduler.sigma_min = 0``): ``linspace(1, 0, K)``; the last scheduled step then starts at
    sigma 0 and has zero length, which is why Z-Image-Turbo's "9 steps" are 8 transformer passes
    and TDM-R1's Z-Image "5 steps" are 4. tdmbench skips such a step without a transformer pass;
  - ``"z-image"`` (``ZImagePipeline`` in diffusers >= 0.37): ``linspace(1, 1/K, K)``;
  - ``"trailing"`` (diffusers' trailing timestep spacing; TDM's few-step boundaries):
    ``linspace(1, 0, K+1)[:K]``, so each of the K steps covers 1/K of (un-shifted) time and every
    pass does work. ``"flowmatch"`` with small K wastes its last pass: for K=4 it ends with a
    step from sigma 0.001 to 0 (the toy student up to models v2 was such a 3-step model plus a no-op).

* ``"dpmsolver++"`` = ``DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type=
  "flow_prediction", solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
  final_sigmas_type="zero")`` as TDM / TDM-R1 configure it (the Sana scheduler config with
  ``flow_shift``): sigmas ``shift(1 - linspace(1, 1/1000, K+1))`` reversed without the last, then 0.
  First-order first and last steps, second-order midpoint in between. diffusers feeds the model
  **integer** timesteps ``int(1000 * sigma)`` (e.g. 999, 899, 749, 499 for K=4, shift 3) while the
  solver uses the exact sigmas; :class:`FlowSchedule` keeps both (``model_sigmas``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tdm_r1.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from tdm_r1.models.adapter import FlowAdapter
    from tdm_r1.models.conditioning import Conditioning

Solver = Literal["euler", "dpmsolver++"]
Spacing = Literal["flowmatch", "zero-terminal", "z-image", "trailing"]
SOLVERS: tuple[str, ...] = ("euler", "dpmsolver++")
SPACINGS: tuple[str, ...] = ("flowmatch", "zero-terminal", "z-image", "trailing")
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class FlowSchedule:
    """A sampling schedule.

    Attributes:
        sigmas: (K+1,) float32, from ~1 down to 0: the boundaries of the K steps.
        model_sigmas: (K,) float32: the sigma the transformer is told at step k (equal to
            ``sigmas[:-1]`` except for DPM-Solver, whose diffusers timesteps are integers).
        solver: "euler" or "dpmsolver++".
    """

    sigmas: torch.Tensor
    model_sigmas: torch.Tensor
    solver: str

    @property
    def steps(self) -> int:
        return int(self.sigmas.numel()) - 1

    @property
    def passes(self) -> int:
        """Transformer passes per image without CFG (zero-length steps cost nothing)."""
        return int((self.sigmas[:-1] != self.sigmas[1:]).sum())


def _static_shift(s: np.ndarray, shift: float) -> np.ndarray:
    return shift * s / (1 + (shift - 1) * s)


def _dynamic_shift(s: np.ndarray, mu: float) -> np.ndarray:
    """diffusers' exponential time shift with exponent 1: ``e^mu / (e^mu + (1/s - 1))``; s=0 -> 0."""
    out = np.zeros_like(s)
    pos = s > 0
    out[pos] = math.exp(mu) / (math.exp(mu) + (1 / s[pos] - 1))
    return out


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Resolution-dependent ``mu`` (linear in the number of latent tokens), as the diffusers pipelines compute it."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


def flow_schedule(
    steps: int,
    *,
    shift: float = 1.0,
    solver: str = "euler",
    spacing: str = "flowmatch",
    mu: float | None = None,
) -> FlowSchedule:
    """Sigmas (and model-time sigmas) matching the diffusers schedulers; see the module docstring.

    Args:
        steps: K, the number of scheduled steps (>= 1).
        shift: static shift (``FlowMatchEulerDiscreteScheduler.shift`` / DPM ``flow_shift``).
        solver: "euler" (FlowMatch Euler) or "dpmsolver++".
        spacing: Euler only: "flowmatch", "zero-terminal", "z-image" or "trailing".
        mu: Euler only: dynamic shifting exponent (``use_dynamic_shifting=True`` schedulers); replaces ``shift``.
    """
    import torch

    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ConfigError(f"shift must be > 0, got {shift}")
    if solver == "euler":
        if spacing == "flowmatch":
            # the scheduler's sigma_min: its smallest training sigma 1/1000, shifted (in float32, as diffusers)
            s_min = torch.tensor(1.0 / NUM_TRAIN_TIMESTEPS, dtype=torch.float32)
            if mu is None:
                s_min = shift * s_min / (1 + (shift - 1) * s_min)
            base = np.linspace(1.0, float(s_min.item()), steps)
        elif spacing == "zero-terminal":
            base = np.linspace(1.0, 0.0, steps)
        elif spacing == "z-image":
            base = np.linspace(1.0, 1.0 / steps, steps)
        elif spacing == "trailing":
            base = np.linspace(1.0, 0.0, steps + 1)[:-1]
        else:
            raise ConfigError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
        shifted = _dynamic_shift(base, mu) if mu is not None else _static_shift(base, shift)
        sig = torch.from_numpy(shifted).to(torch.float32)
        sigmas = torch.cat([sig, torch.zeros(1)])
        return FlowSchedule(sigmas=sigmas, model_sigmas=sigmas[:-1].clone(), solver=solver)
    if solver == "dpmsolver++":
        if mu is not None:
            raise ConfigError("dynamic shifting (mu) is only implemented for the Euler solver")
        alphas = np.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, steps + 1)
        s = np.flip(_static_shift(1.0 - alphas, shift))[:-1].copy()
        timesteps = (s * NUM_TRAIN_TIMESTEPS).astype(np.int64)  # diffusers casts to int64 (truncation)
        sigmas = torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))
        model_sigmas = torch.from_numpy(timesteps.astype(np.float32) / NUM_TRAIN_TIMESTEPS)
        return FlowSchedule(sigmas=sigmas, model_sigmas=model_sigmas, solver=solver)
    raise ConfigError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")


def flow_sigmas(
    steps: int,
    *,
    shift: float = 1.0,
    solver: str = "euler",
    spacing: str = "flowmatch",
    mu: float | None = None,
) -> torch.Tensor:
    """(K+1,) float32 sigmas from ~1 to 0; see :func:`flow_schedule`."""
    return flow_schedule(steps, shift=shift, solver=solver, spacing=spacing, mu=mu).sigmas


def count_passes(steps: int, *, solver: str = "euler", spacing: str = "flowmatch") -> int:
    """Transformer passes per image without CFG, computed without torch (for ``tdmbench ls models``)."""
    if solver == "euler" and spacing == "zero-terminal" and steps > 1:
        return steps - 1
    return steps


def derive_seed(base_seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived deterministically from ``base_seed`` and keys (e.g. prompt index, image index).

    Independent of batch composition and order, so any subset of images regenerates identically.
    """
    text = ":".join(str(k) for k in (base_seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


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


def guided_velocity(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float, renorm: float | None = None
) -> torch.Tensor:
    """CFG: ``v_u + g * (v_c - v_u)``; with ``renorm``, each sample's norm is capped at ``renorm * |v_c|``.

    ``renorm`` reproduces ``ZImagePipeline(cfg_normalization=...)`` (norms over all latent elements).
    """
    import torch

    v = v_uncond + guidance * (v_cond - v_uncond)
    if renorm is not None and renorm > 0:
        limit = renorm * v_cond.flatten(1).norm(dim=1)
        norm = v.flatten(1).norm(dim=1)
        scale = torch.where(norm > limit, limit / norm, torch.ones_like(norm))
        v = v * scale.view(-1, *([1] * (v.ndim - 1)))
    return v


def sample(
    adapter: FlowAdapter,
    cond: Conditioning,
    noise: torch.Tensor,
    sigmas: torch.Tensor | FlowSchedule,
    *,
    guidance: float = 1.0,
    uncond: Conditioning | None = None,
    solver: str | None = None,
    role: str | None = None,
    model_sigmas: torch.Tensor | None = None,
    cfg_renorm: float | None = None,
    keep_grad: bool = False,
    return_x0: bool = True,
    progress: bool = False,
    velocity_fn: Callable[..., torch.Tensor] | None = None,
) -> Trajectory:
    """Run one deterministic flow ODE solve and return the whole trajectory.

    Args:
        adapter: any :class:`~tdm_r1.models.base.FlowAdapter` (only ``velocity`` is used).
        cond: conditioning for the N samples.
        noise: (N, C, h, w) the initial latent at ``sigmas[0]`` (see ``FlowAdapter.initial_noise``).
        sigmas: (K+1,) boundaries, or a :class:`FlowSchedule` (then ``solver`` and ``model_sigmas`` default to it).
        guidance: CFG scale g (tdmbench convention: ``v = v_u + g (v_c - v_u)``, 1 = off, one pass).
        uncond: null conditioning, required when ``guidance != 1``.
        solver: "euler" or "dpmsolver++" (default: the schedule's, else "euler").
        role: LoRA role used for every pass (None = frozen base).
        model_sigmas: (K,) sigmas fed to the transformer (default ``sigmas[:-1]``).
        cfg_renorm: optional CFG norm cap, see :func:`guided_velocity`.
        keep_grad: keep the autograd graph (default: run under ``torch.no_grad``).
        return_x0: also return the per-step x0 predictions.
        progress: show a tqdm bar over steps.
        velocity_fn: override ``adapter.velocity`` (same signature), e.g. for a wrapped/compiled call.

    Returns:
        :class:`Trajectory`; latents are float32 regardless of the model dtype.
    """
    import torch

    if isinstance(sigmas, FlowSchedule):
        solver = solver or sigmas.solver
        model_sigmas = sigmas.model_sigmas if model_sigmas is None else model_sigmas
        sigmas = sigmas.sigmas
    solver = solver or "euler"
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
    sigmas = sigmas.detach().to("cpu", torch.float32)
    steps = sigmas.numel() - 1
    if steps < 1 or bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ConfigError(f"sigmas must be non-increasing with at least 2 entries, got {sigmas.tolist()}")
    model_sigmas = sigmas[:-1] if model_sigmas is None else model_sigmas.detach().to("cpu", torch.float32)
    if model_sigmas.numel() != steps:
        raise ConfigError(f"model_sigmas must have {steps} entries, got {model_sigmas.numel()}")
    use_cfg = guidance != 1.0
    if use_cfg and uncond is None:
        raise ConfigError(f"guidance={guidance} needs `uncond` (adapter.null_conditioning(n))")
    if len(cond) != noise.shape[0] or (use_cfg and len(uncond) != noise.shape[0]):  # type: ignore[arg-type]
        raise ConfigError(f"conditioning for {len(cond)} samples but noise has batch {noise.shape[0]}")
    vel = velocity_fn or adapter.velocity
    both = _cat_conditioning(uncond, cond) if use_cfg else None

    def velocity(x: torch.Tensor, s_model: float) -> torch.Tensor:
        n = x.shape[0]
        if not use_cfg:
            return vel(x, x.new_full((n,), s_model), cond, role=role).float()
        out = vel(torch.cat([x, x]), x.new_full((2 * n,), s_model), both, role=role).float()
        v_u, v_c = out[:n], out[n:]
        return guided_velocity(v_c, v_u, guidance, cfg_renorm)

    ctx = torch.enable_grad() if keep_grad else torch.no_grad()
    x = noise.float()
    latents = [x]
    x0s: list[torch.Tensor] = []
    nfe = 0
    prev: tuple[torch.Tensor, float] | None = None  # DPM: (x0 of the previous step, its lambda)
    iterator: Sequence[int] | Any = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="sampling", leave=False)
    with ctx:
        for k in iterator:
            s, s_next = float(sigmas[k]), float(sigmas[k + 1])
            if s == s_next:  # zero-length step: no transformer pass, nothing moves
                latents.append(x)
                if return_x0:
                    x0s.append(x if s == 0 else (x0s[-1] if x0s else x))
                continue
            v = velocity(x, float(model_sigmas[k]))
            nfe += 2 if use_cfg else 1
            x0 = x - sigmas[k] * v
            if solver == "euler":
                x = x + (sigmas[k + 1] - sigmas[k]) * v
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
