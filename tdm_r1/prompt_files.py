"""Prompt files: ``.txt`` (one prompt per line) or ``.jsonl`` (a ``prompt`` field plus metadata)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a prompts file: its 0-based index, text and extra metadata (JSONL fields)."""

    index: int
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """``.txt`` (one prompt per non-empty line) or ``.jsonl`` (a ``prompt`` field; other fields kept)."""
    from tdm_r1.errors import read_text

    path = Path(path)
    text = read_text(path, "prompts file")
    records: list[PromptRecord] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ConfigError(f"{path}:{lineno}: each line needs a string field 'prompt'")
            meta = {k: v for k, v in row.items() if k != "prompt"}
            records.append(PromptRecord(len(records), row["prompt"], meta))
    elif path.suffix in (".txt", ""):
        for line in text.splitlines():
            if line.strip():
                records.append(PromptRecord(len(records), line.strip()))
    else:
        raise ConfigError(f"prompts file {path}: use .txt (one prompt per line) or .jsonl (a 'prompt' field)")
    if not records:
        raise ConfigError(f"prompts file {path} has no prompts")
    return records


def read_metadata(path: str | Path, images_dir: str | Path) -> dict[str, dict[str, Any]]:
    """An image folder's metadata JSONL (``tdmbench score --metadata``): rows keyed by their
    ``file`` (relative to ``images_dir``; absolute paths inside it work)."""
    from tdm_r1.errors import read_text

    path, root = Path(path), Path(images_dir).resolve()
    rows: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(read_text(path, "metadata file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            raise ConfigError(
                f'{path}:{lineno} needs a "file" field (image path relative to the image folder)'
            )
        if "prompt" in row and not isinstance(row["prompt"], str):
            raise ConfigError(f'{path}:{lineno}: "prompt" must be a string, got {row["prompt"]!r}')
        file = Path(row["file"])
        if file.is_absolute():
            try:
                file = file.resolve().relative_to(root)
            except ValueError as exc:
                raise ConfigError(
                    f"{path}:{lineno}: {row['file']} is not inside the image folder {root}"
                ) from exc
        key = file.as_posix()
        if key in rows:
            raise ConfigError(f"{path}:{lineno}: {key!r} has a second metadata row")
        rows[key] = row
    return rows
