"""Checks that a local LoRA's files are whole before a model loads them (seconds of loading, then
a ``SafetensorError`` or ``JSONDecodeError`` traceback, otherwise).

A ``.safetensors`` file is an 8-byte little-endian header length, a JSON header naming each
tensor's byte range, then the data: a file cut short is found from its header and size alone,
without torch. ``adapter_config.json`` must be a JSON object (the PEFT config training writes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tdm_r1.errors import UnreadableFileError, excerpt

#: Weight files a LoRA folder may hold (the names ``tdm_r1.models.roles`` looks for).
LORA_WEIGHT_NAMES = ("adapter_model.safetensors", "pytorch_lora_weights.safetensors")
#: A safetensors header larger than this is no header (the format caps it at 100 MB).
MAX_HEADER = 100 * 1024 * 1024


def check_safetensors(path: Path, what: str = "LoRA weights") -> None:
    """Raise :class:`UnreadableFileError` naming ``path`` unless it is a whole safetensors file."""
    size = path.stat().st_size
    expected = "a safetensors file (8-byte header length, JSON header, tensor data)"
    with path.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > MAX_HEADER or 8 + n > size:
            raise UnreadableFileError(
                f"{what} {path}: not {expected}, or cut short ({size} bytes): copy the file again"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(
            f"{what} {path}: its header is not JSON ({excerpt(str(exc))}): expected {expected}"
        ) from exc
    if not isinstance(header, dict):
        raise UnreadableFileError(f"{what} {path}: its header is not a JSON object: expected {expected}")
    ends = [
        int(v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2
    ]
    need = 8 + n + max(ends, default=0)
    if size != need:
        why = "cut short" if size < need else "longer than its header says"
        raise UnreadableFileError(
            f"{what} {path}: {why} ({size} bytes, its header describes {need}): copy the file again"
        )


def check_json_object(path: Path, what: str) -> None:
    """Raise :class:`UnreadableFileError` unless ``path`` holds one JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"{path}: not valid JSON ({excerpt(str(exc))}): expected {what}") from exc
    if not isinstance(data, dict):
        raise UnreadableFileError(f"{path}: holds a JSON {type(data).__name__}: expected {what}")


def check_lora(path: str | os.PathLike[str]) -> None:
    """Check a LoRA file or folder (its weights and ``adapter_config.json``); a missing path is
    left to the loader's own error."""
    p = Path(path).expanduser()
    if not p.exists():
        return
    folder = p if p.is_dir() else p.parent
    config = folder / "adapter_config.json"
    if config.is_file():
        check_json_object(config, "the PEFT LoRA config (adapter_config.json) that training writes")
    files = [folder / n for n in LORA_WEIGHT_NAMES if (folder / n).is_file()] if p.is_dir() else [p]
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors(f)


def check_lora_source(lora: object) -> None:
    """:func:`check_lora` when ``lora`` (a preset's ``lora`` field or a ``--lora-path``) is a local
    path; a declared download (a ``WeightFile``) is checked by its sha256 instead."""
    if isinstance(lora, (str, os.PathLike)):
        check_lora(lora)
