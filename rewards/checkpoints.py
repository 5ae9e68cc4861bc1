"""Reading reward checkpoints saved with ``torch.save`` (``.pt`` / ``.pth`` state dicts)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tdm_r1.errors import MissingWeightsError, ShapeError


def load_torch_file(path: str | Path, *, weights_only: bool = True) -> Any:
    """``torch.load`` on CPU with a readable error for unreadable or unsafe files.

    ``weights_only=True`` (the default) refuses pickled code objects; a checkpoint that needs
    them fails with a message naming the ``weights_only=False`` option instead of a pickle trace.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint {path} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        raise ShapeError(
            f"{path} could not be unpickled with weights_only={weights_only}: {exc}. If the file comes from "
            "a source you trust, pass the reward option weights_only=false."
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise ShapeError(f"{path} is not a readable torch checkpoint (truncated download?): {exc}") from exc


def state_dict_mismatch(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, wrong_shape)`` of ``state`` against ``module.state_dict()``: sorted
    key lists, and ``"key: checkpoint (shape) vs model (shape)"`` lines. All empty = a strict fit."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k]}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != expected[k]
    ]
    return missing, unexpected, wrong


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Drop ``prefix`` (e.g. DDP's ``module.``) when every key carries it; otherwise return as is."""
    keys = list(state)
    if keys and all(k.startswith(prefix) for k in keys):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)
