"""How a model samples by default: :class:`SamplingSpec` (torch-free; a preset holds one).

Guidance convention (every family): ``v = v_uncond + g * (v_cond - v_uncond)``; ``g = 1`` means no
CFG (one transformer pass). diffusers' ``ZImagePipeline`` writes ``pos + s * (pos - neg)``, i.e.
``s = g - 1``: Z-Image-Turbo's ``guidance_scale=0`` is ``guidance=1`` here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tdm_r1 import schedule
from tdm_r1.errors import ConfigError


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling defaults of a model.

    Attributes:
        steps: scheduled sampling steps.
        guidance: CFG scale in tdmbench's convention (1 = off; see the module docstring).
        shift: flow shift (Euler ``shift`` / DPM-Solver ``flow_shift``).
        solver: "euler" or "dpmsolver++".
        spacing: Euler sigma spacing: "flowmatch", "zero-terminal", "z-image" or "trailing"
            (see ``tdm_r1.schedule``).
        height, width: resolution in pixels.
        cfg_renorm: optional CFG norm cap (``ZImagePipeline(cfg_normalization=...)``).
    """

    steps: int
    guidance: float = 1.0
    shift: float = 3.0
    solver: str = "euler"
    spacing: str = "flowmatch"
    height: int = 512
    width: int = 512
    cfg_renorm: float | None = None

    def replace(self, **changes: Any) -> SamplingSpec:
        """A copy with the changes that are not None (``replace(steps=None)`` keeps ``steps``)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def nfe(self) -> int:
        """Transformer passes per image (CFG doubles; zero-length scheduled steps cost nothing)."""
        return schedule.nfe(
            self.steps, guidance=self.guidance, solver=self.solver, spacing=self.spacing, shift=self.shift
        )

    def check(self, owner: str) -> None:
        """Raise :class:`ConfigError` naming ``owner`` when a field has no valid value."""
        if self.solver not in schedule.SOLVERS:
            raise ConfigError(
                f"{owner}: unknown solver {self.solver!r}; valid: {', '.join(schedule.SOLVERS)}"
            )
        if self.spacing not in schedule.SPACINGS:
            raise ConfigError(
                f"{owner}: unknown spacing {self.spacing!r}; valid: {', '.join(schedule.SPACINGS)}"
            )
        if self.steps < 1 or self.height % 16 or self.width % 16:
            raise ConfigError(
                f"{owner}: steps must be >= 1 and height/width multiples of 16 "
                f"(got steps={self.steps}, {self.height}x{self.width})"
            )


#: Field names of :class:`SamplingSpec` (a preset's flat file format uses them as keys).
SAMPLING_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SamplingSpec))
