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
