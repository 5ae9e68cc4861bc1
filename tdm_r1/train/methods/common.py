"""What the direct RL methods (Flow-GRPO, DiffusionNFT, DGPO) share: frozen copies, CFG checks, LoRA soft updates.

The model being improved is the ``generator`` role. Its starting point is the reference of the
KL terms: the base with adapters off when the generator starts from zeros (a teacher), or a
frozen copy of the starting generator when the preset brings a LoRA (a distilled student).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from tdm_r1.errors import ConfigError
from tdm_r1.train.methods.base import GEN, RoleSpec

if TYPE_CHECKING:
    from tdm_r1.train.config import TrainConfig
    from tdm_r1.train.methods.base import Loop

REF, OLD = "reference", "old"


def generator_spec(cfg: TrainConfig) -> RoleSpec:
    """The trainable generator (AdamW betas of the public recipes: the PyTorch defaults)."""
    return RoleSpec(GEN, cfg.model.generator_init, True, 1.0)


def reference_role(loop: Loop) -> str | None:
    """The role that is the starting model: None (the base) or the frozen copy ``reference``."""
    return REF if needs_reference_copy(loop) else None


def needs_reference_copy(loop: Loop) -> bool:
    """A copy is needed unless the generator starts as the base (no preset LoRA, zero init)."""
    return GEN in loop.adapter.roles or loop.cfg.model.generator_init != "zeros"


def reference_spec() -> RoleSpec:
    return RoleSpec(REF, "zeros", False, copy_from=GEN)


def resolve_guidance(value: float | None, loop: Loop) -> float:
    """A method's CFG option: None = the model's own sampling guidance."""
    return float(loop.adapter.sampling.guidance if value is None else value)


def check_guidance(method: str, option: str, value: float | None, preset: Any) -> None:
    """CFG needs a trained unconditional branch: a CFG-distilled model (kind distilled / rl, sampled
    at guidance 1) has none worth guiding with."""
    g = preset.sampling.guidance if value is None else value
    if g != 1.0 and preset.kind in ("distilled", "rl") and preset.sampling.guidance == 1.0:
        raise ConfigError(
            f"{method}: {option}={g:g} needs classifier-free guidance, but model {preset.name!r} is a "
            f"{preset.kind} model sampled without CFG (guidance 1): it has no trained unconditional branch. "
            f"Set {option}=1 (or leave it unset)."
        )


def check_rollout_steps(method: str, steps: int | None) -> None:
    if steps is not None and steps < 1:
        raise ConfigError(f"{method}: rollout_steps must be >= 1 (or null = the model's), got {steps}")


def check_fraction(method: str, option: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{method}: {option} must be in (0, 1], got {value}")


@torch.no_grad()
def soft_update(loop: Loop, target: str, source: str, decay: float) -> None:
    """``target <- decay * target + (1 - decay) * source`` on the roles' LoRA tensors."""
    a = loop.adapter
    for t, s in zip(a.role_parameters(target), a.role_parameters(source), strict=True):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)


def full(loop: Loop, n: int, value: Any) -> torch.Tensor:
    """(n,) float32 tensor of ``value`` on the loop's device."""
    return torch.full((n,), float(value), device=loop.device)
