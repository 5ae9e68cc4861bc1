"""Sampling schedules without torch: the sigmas of every solver and spacing, and what they cost.

Convention (everywhere in tdmbench): ``x_sigma = (1 - sigma) * x0 + sigma * noise``; the math
on tensors lives in :mod:`tdm_r1.flow`. Schedules reproduce the diffusers schedulers used by the
reference pipelines, value for value (float32, in the same order of operations):

* ``"euler"`` = ``FlowMatchEulerDiscreteScheduler``. Four spacings of the unshifted sigmas
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
  diffusers feeds the model **integer** timesteps ``int(1000 * sigma)`` (e.g. 999, 899, 749, 499
  for K=4, shift 3) while the solver uses the exact sigmas; both are returned (``model_sigmas``).

NFE is computed here and only here (:func:`nfe`): transformer passes of the schedule's
non-zero-length steps, doubled by classifier-free guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from tdm_r1.errors import ConfigError
from tdm_r1.flow import shift_sigma

if TYPE_CHECKING:
    import torch

Solver = Literal["euler", "dpmsolver++"]
Spacing = Literal["flowmatch", "zero-terminal", "z-image", "trailing"]
SOLVERS: tuple[str, ...] = ("euler", "dpmsolver++")
SPACINGS: tuple[str, ...] = ("flowmatch", "zero-terminal", "z-image", "trailing")
NUM_TRAIN_TIMESTEPS = 1000


def dynamic_shift(s: np.ndarray, mu: float) -> np.ndarray:
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


def schedule_arrays(
    steps: int,
    *,
    shift: float = 1.0,
    solver: str = "euler",
    spacing: str = "flowmatch",
    mu: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (K+1,) float32 step boundaries from ~1 down to 0 and the (K,) float32 model sigmas.

    Args:
        steps: K, the number of scheduled steps (>= 1).
        shift: static shift (``FlowMatchEulerDiscreteScheduler.shift`` / DPM ``flow_shift``).
        solver: "euler" (FlowMatch Euler) or "dpmsolver++".
        spacing: Euler only: "flowmatch", "zero-terminal", "z-image" or "trailing".
        mu: Euler only: dynamic shifting exponent (``use_dynamic_shifting=True`` schedulers); replaces ``shift``.
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ConfigError(f"shift must be > 0, got {shift}")
    if solver == "euler":
        if spacing == "flowmatch":
            # the scheduler's sigma_min: its smallest training sigma 1/1000, shifted (in float32, as diffusers)
            s_min = np.float32(1.0 / NUM_TRAIN_TIMESTEPS)
            if mu is None:
                s_min = shift_sigma(s_min, np.float32(shift))
            base = np.linspace(1.0, float(s_min), steps)
        elif spacing == "zero-terminal":
            base = np.linspace(1.0, 0.0, steps)
        elif spacing == "z-image":
            base = np.linspace(1.0, 1.0 / steps, steps)
        elif spacing == "trailing":
            base = np.linspace(1.0, 0.0, steps + 1)[:-1]
        else:
            raise ConfigError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
        shifted = dynamic_shift(base, mu) if mu is not None else shift_sigma(base, shift)
        sigmas = np.concatenate([shifted.astype(np.float32), np.zeros(1, np.float32)])
        return sigmas, sigmas[:-1].copy()
    if solver == "dpmsolver++":
        if mu is not None:
            raise ConfigError("dynamic shifting (mu) is only implemented for the Euler solver")
        alphas = np.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, steps + 1)
        s = np.flip(shift_sigma(1.0 - alphas, shift))[:-1].copy()
        timesteps = (s * NUM_TRAIN_TIMESTEPS).astype(np.int64)  # diffusers casts to int64 (truncation)
        sigmas = np.concatenate([s, [0.0]]).astype(np.float32)
        return sigmas, timesteps.astype(np.float32) / np.float32(NUM_TRAIN_TIMESTEPS)
    raise ConfigError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")


@dataclass(frozen=True)
class FlowSchedule:
    """A sampling schedule as tensors (for the sampler and the trainers).

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


def flow_schedule(
    steps: int,
    *,
    shift: float = 1.0,
    solver: str = "euler",
    spacing: str = "flowmatch",
    mu: float | None = None,
) -> FlowSchedule:
    """:func:`schedule_arrays` as a :class:`FlowSchedule` of torch tensors (imports torch)."""
    import torch

    sigmas, model_sigmas = schedule_arrays(steps, shift=shift, solver=solver, spacing=spacing, mu=mu)
    return FlowSchedule(
        sigmas=torch.from_numpy(sigmas), model_sigmas=torch.from_numpy(model_sigmas), solver=solver
    )


def count_passes(steps: int, *, solver: str = "euler", spacing: str = "flowmatch", shift: float = 1.0) -> int:
    """Transformer passes per image without CFG: the schedule's non-zero-length steps."""
    sigmas, _ = schedule_arrays(steps, shift=shift, solver=solver, spacing=spacing)
    return int((sigmas[:-1] != sigmas[1:]).sum())


def nfe(
    steps: int,
    *,
    guidance: float = 1.0,
    solver: str = "euler",
    spacing: str = "flowmatch",
    shift: float = 1.0,
) -> int:
    """Transformer passes per image: :func:`count_passes`, doubled when CFG is on (``guidance != 1``)."""
    return count_passes(steps, solver=solver, spacing=spacing, shift=shift) * (2 if guidance != 1.0 else 1)
