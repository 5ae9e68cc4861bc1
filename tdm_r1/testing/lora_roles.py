"""LoRA helpers for model tests."""

from __future__ import annotations

import math
from typing import Any

import torch


def add_random_role(adapter: Any, name: str, *, seed: int = 0, **kwargs: Any) -> None:
    """Add LoRA role ``name`` with A and B both random (nn.Linear's default init), so that its
    output differs from the base at once (a fresh role has B = 0 and equals the base)."""
    adapter.roles.add(name, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.roles.parameters(name):
            torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=gen)
