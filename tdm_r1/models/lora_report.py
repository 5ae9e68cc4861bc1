"""What a LoRA load put into a role, and the strict name check every load goes through.

:meth:`~tdm_r1.models.roles.LoraRoles.load` (peft / diffusers files: tensors by name) and
:meth:`~tdm_r1.models.roles.LoraRoles.load_tdm_ema` (TDM / TDM-R1 EMA lists, placed by the
published names of :mod:`tdm_r1.models.ema_layouts`) are strict: any missing or unexpected tensor
raises :class:`~tdm_r1.errors.ShapeError` in one line before anything is copied. A load that
succeeds returns (and the role keeps) a :class:`LoraLoadReport`: how many tensors the role has,
how many were copied, none missing, none unexpected, and the scale the role runs at, so that a
test or a user can state "0 missing, 0 unexpected, scale alpha / rank = 2" for a published LoRA.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tdm_r1.errors import ShapeError


@dataclass(frozen=True)
class LoraLoadReport:
    """One successful strict load into a role.

    Attributes:
        role: the role loaded into.
        source: the file (and format) read.
        expected: the role's LoRA tensors on this transformer.
        loaded: tensors copied (== ``expected`` after a strict load).
        missing, unexpected: tensor names absent from / extra in the file (empty after a strict load).
        rank, alpha: the role's LoRA layout.
        scale: the role's scale on top of ``alpha / rank`` (1.0 as published).
    """

    role: str
    source: str
    expected: int
    loaded: int
    rank: int
    alpha: float
    scale: float = 1.0
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    @property
    def scaling(self) -> float:
        """The factor on ``B A x`` the role runs with: ``scale * alpha / rank`` (peft's ``scaling``)."""
        return self.scale * self.alpha / self.rank

    def summary(self) -> str:
        return (
            f"{self.source} -> role {self.role!r}: {self.loaded}/{self.expected} tensors, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"r={self.rank}, alpha={self.alpha:g}, scaling {self.scaling:g}"
        )


def check_names(expected: Iterable[str], found: Iterable[str], *, source: str, role: str) -> None:
    """Raise a one-line :class:`ShapeError` unless ``found`` holds exactly the ``expected`` names."""
    want, got = set(expected), set(found)
    missing, unexpected = sorted(want - got), sorted(got - want)
    if missing or unexpected:
        raise ShapeError(
            f"LoRA {source} does not match role {role!r}: {len(missing)} missing tensors "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); nothing was "
            "loaded. Check the model family and the LoRA's rank and target modules."
        )
