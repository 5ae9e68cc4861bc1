"""Exponential moving average of a list of parameters (generator EMA, teacher EMA)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class EMA:
    """Shadow copy ``s <- d * s + (1 - d) * p`` of ``params``, with an optional warm-up.

    With ``warmup=True`` the effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so early averages are not dominated by the random initialisation.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float, *, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.params = [p for p in params]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for s, p in zip(self.shadow, self.params, strict=True):
            s.mul_(d).add_(p.detach().float(), alpha=1 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, params: Iterable[torch.nn.Parameter] | None = None) -> None:
        for s, p in zip(self.shadow, params if params is not None else self.params, strict=True):
            p.copy_(s.to(p.dtype))

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily put the EMA weights into the live parameters."""
        backup = [p.detach().clone() for p in self.params]
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                for b, p in zip(backup, self.params, strict=True):
                    p.copy_(b)

    def state_dict(self) -> dict:
        return {
            "shadow": [s.clone() for s in self.shadow],
            "decay": self.decay,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, expected {len(self.shadow)}")
        for s, t in zip(self.shadow, state["shadow"], strict=True):
            if s.shape != t.shape:
                raise ValueError(f"EMA tensor shape {tuple(t.shape)} != {tuple(s.shape)}")
            s.copy_(t)
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
