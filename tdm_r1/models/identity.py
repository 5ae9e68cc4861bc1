"""What determines a model's images, as one JSON-able value: the identity of cached images and results.

A committed result (``results/<suite>/<model>.meta.json``) and every cached image are keyed by
the model's *image identity*: the weights (a content digest for local folders and files, the hub
id, file and pinned revision otherwise), the LoRA layout and scale, the dtype, the adapter options
that change the computation (e.g. the T5 length), and every sampling setting (steps, guidance,
shift, solver, spacing, resolution, CFG renorm). Nothing else enters: not the model's name, its
kind, its leaderboard relations, its description, nor the layout of the Python objects that hold
these values. So a refactor that changes no image changes no identity, and a renamed model keeps
its cached images; a field added later enters only when it is set away from its default
(:data:`NEUTRAL`), so adding one does not re-key every committed result.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tdm_r1.models import locate
from tdm_r1.models.families import prompt_tokens
from tdm_r1.weights import WeightFile

#: Version of this identity's layout: bump it (and re-stamp ``results/``) only when what
#: determines an image is described differently, never for a refactor.
IDENTITY_VERSION = "1"

#: Optional preset fields that enter the identity only away from these values (their default
#: reproduces the images made before the field existed).
NEUTRAL: dict[str, Any] = {"lora_scale": None}


def weights_identity(value: WeightFile | str | None) -> dict[str, Any] | None:
    """A local folder or file by its content digest; a hub file by id, filename, revision and hash."""
    if value is None:
        return None
    if isinstance(value, WeightFile):
        return {
            "hub_id": value.hub_id,
            "filename": value.filename,
            "revision": value.revision,
            "sha256": value.sha256,
        }
    path = Path(str(value)).expanduser()
    if path.exists():
        return {"sha256": locate.digest_path(path)}
    return {"hub_id": str(value)}  # a hub id (or a path absent here: it stands for itself)


def image_identity(preset: Any) -> dict[str, Any]:
    """The image identity of a :class:`~tdm_r1.models.preset.ModelPreset` (see the module docstring)."""
    lora = weights_identity(preset.lora)
    if lora is not None:
        lora["format"] = preset.lora_format
    if lora is not None and preset.lora_format == "tdm-ema":
        # a bare list of tensors: the layout comes from the preset (a peft folder's own
        # adapter_config.json is part of its digest)
        targets = preset.lora_targets
        lora.update(
            {
                "rank": int(preset.lora_rank),
                "alpha": float(preset.lora_alpha),
                "targets": sorted(targets) if targets is not None else None,
            }
        )
    out: dict[str, Any] = {
        "identity_version": IDENTITY_VERSION,
        "family": preset.family,
        "pipeline": weights_identity(preset.hub_id),
        "lora": lora,
        "dtype": preset.dtype,
        "options": _options(preset),
        "sampling": dataclasses.asdict(preset.sampling),
    }
    for name, neutral in NEUTRAL.items():
        value = getattr(preset, name, neutral)
        if value != neutral:
            out[name] = value
    return out


def _options(preset: Any) -> dict[str, Any]:
    """The adapter options, with the text length the family encodes with when the preset leaves
    it to the family (a change of that default changes the images, so it changes the identity)."""
    options = dict(preset.options)
    options.setdefault("max_sequence_length", prompt_tokens(preset.family, options)["max_sequence_length"])
    return dict(sorted(options.items()))


def sampler_settings(preset: Any) -> dict[str, Any]:
    """The sampling settings a result's ``meta.json`` records (every field of the preset's spec)."""
    spec = getattr(preset, "sampling", None)
    if spec is not None and dataclasses.is_dataclass(spec):
        return dataclasses.asdict(spec)
    return {k: getattr(preset, k, None) for k in ("steps", "guidance", "height", "width")}
