"""Atomic, resumable training checkpoints: modules, optimisers, schedulers, RNG and loop state.

A checkpoint is one folder ``<dir>/step-<N>`` written to a temporary name and renamed into place,
so a run killed at any moment (SIGKILL included) leaves either the previous or the new checkpoint,
never a half-written one. ``latest(dir)`` finds the newest complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_DONE = "COMPLETE"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    directory: str | Path, step: int, state: dict[str, Any], *, keep: int = 2, meta: dict | None = None
) -> Path:
    """Write ``state`` (anything ``torch.save`` takes) as ``<directory>/step-<step>``, atomically.

    Keeps the newest ``keep`` checkpoints.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, **(meta or {})}, indent=2))
    (tmp / _DONE).write_text("ok")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("step-*") if (p / _DONE).is_file())


def latest(directory: str | Path) -> Path | None:
    found = complete(directory)
    return found[-1] if found else None


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(path) / "state.pt", map_location=map_location, weights_only=False)
