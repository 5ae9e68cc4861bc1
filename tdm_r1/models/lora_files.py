"""Reading a LoRA file in the layouts tdmbench loads: its own saved roles, peft folders and files
(``base_model.model.`` keys), diffusers files (``transformer.`` keys, the config in the
``lora_adapter_metadata`` of ``save_lora_weights``). The role that receives it checks names and
shapes (:meth:`tdm_r1.models.roles.LoraRoles.load`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tdm_r1.errors import ShapeError


def find_lora_files(path: Path) -> tuple[Path, dict[str, Any] | None]:
    if path.is_dir():
        for candidate in (
            "adapter_model.safetensors",
            "pytorch_lora_weights.safetensors",
            "adapter_model.bin",
        ):
            if (path / candidate).is_file():
                weights = path / candidate
                break
        else:
            raise ShapeError(
                f"{path}: no adapter_model.safetensors (or pytorch_lora_weights.safetensors) inside"
            )
        config_path = path / "adapter_config.json"
    else:
        if not path.is_file():
            raise ShapeError(f"LoRA path {path} does not exist")
        weights, config_path = path, path.parent / "adapter_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else _diffusers_metadata(weights)
    return weights, config


def _diffusers_metadata(weights: Path) -> dict[str, Any] | None:
    """The transformer's LoRA config a diffusers ``save_lora_weights`` file carries (rank, alpha,
    targets in ``lora_adapter_metadata``), or None."""
    if weights.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as fh:
        raw = (fh.metadata() or {}).get("lora_adapter_metadata")
    if not raw:
        return None
    meta = {
        k.removeprefix("transformer."): v for k, v in json.loads(raw).items() if k.startswith("transformer.")
    }
    return meta if "r" in meta and "target_modules" in meta else None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ShapeError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def normalise_lora_key(key: str, name: str) -> str:
    for prefix in ("base_model.model.", "transformer."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for part in (f".{name}.", ".default."):
        key = key.replace(part, ".")
    return key
