"""A saved LoRA role written in the layouts other tools load: diffusers and peft.

tdmbench saves a role as ``adapter_model.safetensors`` with keys ``<module>.lora_A.weight`` /
``<module>.lora_B.weight`` and its rank and alpha in ``adapter_config.json``
(:meth:`tdm_r1.models.roles.LoraRoles.save`). Other tools want:

- ``diffusers``: one ``.safetensors`` file whose keys carry the pipeline component,
  ``transformer.<module>.lora_A.weight``, loaded by ``pipeline.load_lora_weights(file)`` (and by
  ComfyUI's diffusers key map). diffusers' loader reads the rank from the shapes and takes alpha
  from the file's ``lora_adapter_metadata`` when present; this writer also folds ``alpha / r``
  into ``lora_B`` and records ``lora_alpha = r``, so that a loader that ignores the metadata (an
  older diffusers, ComfyUI) applies the same scale.
- ``peft``: a folder with ``adapter_config.json`` (a complete ``peft.LoraConfig``) and
  ``adapter_model.safetensors`` keyed ``base_model.model.<module>.lora_A.weight``, loaded by
  ``peft.PeftModel.from_pretrained(transformer, folder)``.

Reading any of these back (``--model``, ``roles.load``) is :meth:`LoraRoles.load`, which strips
the ``transformer.`` / ``base_model.model.`` prefixes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError, ShapeError

FORMATS = ("diffusers", "peft")


def read_saved_role(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, adapter config) of a role saved by tdmbench (a run's ``final/lora`` or a folder
    holding one: ``final/`` itself, or the run folder)."""
    from safetensors.torch import load_file

    for candidate in (folder, folder / "lora", folder / "final" / "lora"):
        if (candidate / "adapter_model.safetensors").is_file() and (
            candidate / "adapter_config.json"
        ).is_file():
            config = json.loads((candidate / "adapter_config.json").read_text())
            return load_file(str(candidate / "adapter_model.safetensors")), config
    raise ShapeError(
        f"{folder}: no saved LoRA role (adapter_model.safetensors + adapter_config.json) in it, in "
        "lora/ or in final/lora/: give a run folder, its final/ folder or a saved role"
    )


def export_lora(folder: Path, fmt: str, out: Path) -> Path:
    """Write the role saved in ``folder`` as ``fmt`` (see the module docstring) to ``out``; returns
    the written file (diffusers) or folder (peft)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown LoRA format {fmt!r}: choose {', '.join(FORMATS)}")
    tensors, config = read_saved_role(Path(folder))
    rank, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    if fmt == "diffusers":
        return _write_diffusers(tensors, rank, alpha, config, Path(out))
    return _write_peft(tensors, rank, alpha, config, Path(out))


def _write_diffusers(tensors: dict[str, Any], rank: int, alpha: float, config: dict, out: Path) -> Path:
    """Through the family pipeline's own ``save_lora_weights`` (its key prefix and metadata)."""
    import diffusers
    from peft import LoraConfig

    from tdm_r1.models.families import FAMILIES

    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: a diffusers LoRA is one .safetensors file; name it *.safetensors")
    family = (config.get("tdmbench") or {}).get("family") or "sd3"
    pipeline = getattr(diffusers, FAMILIES.meta(family)["pipeline"])
    scale = alpha / rank  # folded into B: the file's alpha is its rank, for loaders without metadata
    layers = {k: (v * scale if k.endswith("lora_B.weight") else v).contiguous() for k, v in tensors.items()}
    meta = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(config["target_modules"])).to_dict()
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    pipeline.save_lora_weights(
        str(out.parent),
        transformer_lora_layers=layers,
        transformer_lora_adapter_metadata=meta,
        weight_name=out.name,
    )
    return out


def _write_peft(tensors: dict[str, Any], rank: int, alpha: float, config: dict, out: Path) -> Path:
    from peft import LoraConfig
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {f"base_model.model.{k}": v.contiguous() for k, v in tensors.items()},
        str(out / "adapter_model.safetensors"),
    )
    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(config["target_modules"]))
    data = lora.to_dict()
    data = {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()}
    (out / "adapter_config.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return out
