"""Atomic, resumable training checkpoints: modules, optimisers, schedulers, RNG and loop state.

A checkpoint is one folder ``<dir>/step-<N>`` written to a temporary name and renamed into place,
so a run killed at any moment (SIGKILL included) leaves either the previous or the new checkpoint,
never a half-written one. ``latest(dir)`` finds the newest complete checkpoint;
``load_newest(dir)`` loads it after checking its size and falls back to older ones when a file was
damaged after the fact (a truncated ``state.pt``), saying which it skipped and why.
``clean_partial(dir)`` removes what a killed save left behind; a save checks the free disk space
first and, when the disk fills anyway, keeps the last complete checkpoint and says how much is needed.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdm_r1.errors import TdmError

log = logging.getLogger(__name__)

_DONE = "COMPLETE"
_TMP = ".tmp-step-"


class CheckpointError(TdmError, OSError):
    """A checkpoint cannot be written or no usable checkpoint can be read; the message says what to do."""


def _state_bytes(state: Any) -> int:
    """Bytes of tensor storage in ``state`` (nested dicts / lists), a lower bound of its file size."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_state_bytes(v) for v in state)
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def clean_partial(directory: str | Path) -> list[Path]:
    """Remove ``.tmp-step-*`` folders that a killed or failed save left behind; returns them."""
    directory = Path(directory)
    removed = sorted(directory.glob(f"{_TMP}*")) if directory.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
        log.warning("removed the partial checkpoint %s (a save that did not finish)", path)
    return removed


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
    tmp = directory / f"{_TMP}{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    buf = io.BytesIO()
    torch.save(state, buf)  # serialise in memory first: the exact size is known before any write
    needed = buf.tell() + 4096
    free = shutil.disk_usage(directory).free
    last = latest(directory)
    keeping = f"the last complete checkpoint {last} is kept" if last else "no checkpoint was written yet"
    if free < needed:
        raise CheckpointError(
            f"no space left on {directory}: {_human(needed)} needed, {_human(free)} free; {keeping}. "
            "Free some space (or set output_dir to another disk) and rerun the same command to resume."
        )
    try:
        tmp.mkdir()
        (tmp / "state.pt").write_bytes(buf.getbuffer())
        (tmp / "meta.json").write_text(
            json.dumps({"step": step, "state_bytes": needed - 4096, **(meta or {})}, indent=2)
        )
        (tmp / _DONE).write_text("ok")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(
                f"no space left on {directory}: {_human(needed)} needed; {keeping}. Free some space "
                "(or set output_dir to another disk) and rerun the same command to resume."
            ) from exc
        raise CheckpointError(f"cannot write checkpoint {final}: {exc}; {keeping}.") from exc
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
    """Load one checkpoint, checking it first; :class:`CheckpointError` names the file and the damage."""
    path = Path(path)
    file = path / "state.pt"
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'meta.json'} is unreadable ({exc})") from exc
    expected = meta.get("state_bytes")
    size = file.stat().st_size if file.is_file() else None
    if size is None:
        raise CheckpointError(f"{file} is missing")
    if expected is not None and size != expected:
        raise CheckpointError(f"{file} has {size} bytes, {expected} were written (truncated or damaged)")
    try:
        return torch.load(file, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{file} cannot be read ({type(exc).__name__}: {exc})") from exc


def load_newest(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, or None when there is none; damaged ones are skipped with a warning.

    Raises :class:`CheckpointError` when checkpoints exist but none of them can be read.
    """
    found = complete(directory)
    problems: list[str] = []
    for path in reversed(found):
        try:
            state = load(path, map_location)
        except CheckpointError as exc:
            log.warning("skipping checkpoint %s: %s", path.name, exc)
            problems.append(str(exc))
            continue
        if problems:
            log.warning("resuming from the older checkpoint %s", path)
        return path, state
    if problems:
        raise CheckpointError(
            f"no usable checkpoint in {directory}: {'; '.join(problems)}. Delete the damaged folders "
            "to start the run over, or restore them from a backup."
        )
    return None
