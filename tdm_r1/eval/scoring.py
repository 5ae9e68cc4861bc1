"""Model-free scoring: a folder of images + a metadata JSONL -> one row per image (``tdmbench score``).

Metadata is JSON Lines, one object per image: ``file`` (path relative to the image folder),
``prompt``, and whatever the rewards read (GenEval ``tag``/``include``/``exclude``, OCR
``target_text``, ...). The whole object is passed to the rewards as the image's metadata.

Images are found recursively (png, jpg, jpeg, webp, bmp). An image without a metadata row is an
error that lists them, unless ``allow_missing_metadata`` is set: then it is scored with prompt ""
and empty metadata (useful for prompt-free rewards such as ``jpeg-compressibility``; prompt-based
rewards give NaN with their reason). Metadata rows whose file is absent are logged and skipped.
An unreadable image gets a row with its ``error`` and NaN scores; the others are scored.

Without ``metadata``, a folder in the official GenEval generation layout
(``<outdir>/<index>/metadata.jsonl`` + ``samples/*.png``) is read as GenEval does
(``tdm_r1.eval.geneval_official``); a prompt folder without metadata or samples gets one row
with its reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tdm_r1.errors import ConfigError
from tdm_r1.prompt_files import read_metadata

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
UNREADABLE = "unreadable image"


def list_images(folder: str | Path) -> list[str]:
    """Image files under ``folder`` (recursive), as sorted POSIX paths relative to it."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"image folder {str(root)!r} does not exist or is not a directory")
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def score_folder(
    images_dir: str | Path,
    rewards: Sequence[str] | str | Mapping[str, float],
    *,
    metadata: str | Path | None = None,
    reward_options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 8,
    device: str | None = None,
    allow_missing_metadata: bool = False,
    checkpoint: str | Path | None = None,
) -> pd.DataFrame:
    """Score every image of ``images_dir`` with ``rewards`` (names, optionally weighted).

    ``checkpoint``: a JSONL file that receives each image's row as soon as it is scored; rows
    already in it (same reward id, same metadata) are reused, so an interrupted run loses nothing.

    Returns one row per image: ``file``, ``prompt``, ``reward`` (the reward id), ``score``, every
    detail column of the reward (a weighted sum adds each component's raw score under the
    component's name and its details as ``<name>.<detail>``), ``nan_reason`` and ``error``.
    """
    import torch
    from tqdm.auto import tqdm

    from tdm_r1.images import load_image
    from tdm_r1.rewards import build_reward

    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    from tdm_r1.eval import geneval_official as official

    layout = None
    if metadata is None and official.is_generation_layout(images_dir):  # <outdir>/<index>/samples/*.png
        layout = official.read_generation_layout(images_dir)
    files = layout.files if layout is not None else list_images(images_dir)
    if layout is not None and not files:
        found = "; ".join(f"{where}: {why}" for where, why in layout.problems[:5])
        raise ConfigError(f"no GenEval prompt folder under {images_dir} can be scored ({found})")
    if not files:
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {images_dir}")
    if layout is not None:
        rows = layout.rows
    else:
        rows = read_metadata(metadata, images_dir) if metadata is not None else {}
    missing = [f for f in files if f not in rows]
    if missing and not allow_missing_metadata:
        shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        where = f"in {metadata}" if metadata is not None else "(no --metadata file given)"
        raise ConfigError(
            f"{len(missing)} image(s) have no metadata row {where}: {shown}. Add rows "
            '{"file": ..., "prompt": ...} or pass --allow-missing-metadata to score them with prompt ""'
        )
    absent = sorted(set(rows) - set(files))
    if absent:
        log.warning(
            "%d metadata rows name files that are not in %s (skipped): %s",
            len(absent),
            images_dir,
            absent[:5],
        )

    reward = build_reward(rewards, options=reward_options, device=device)
    reward_check_metadata(reward, rows, metadata)
    root = Path(images_dir)
    results = _resume(checkpoint, reward.id, rows) if checkpoint is not None else {}
    results = {f: r for f, r in results.items() if f in set(files)}
    todo = [f for f in files if f not in results]
    if results:
        log.info("%d of %d images already scored in %s", len(results), len(files), checkpoint)
    with (
        (
            Path(checkpoint).open("a", encoding="utf-8")
            if checkpoint is not None
            else contextlib.nullcontext()
        ) as sink,
        tqdm(total=len(todo), unit="img", desc=f"score {reward.id}", disable=None) as bar,
    ):
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            loaded: dict[str, Any] = {}
            for f in chunk:
                try:
                    loaded[f] = load_image(root / f)
                except (OSError, ValueError) as exc:
                    log.warning("cannot read %s: %s", f, exc)
                    results[f] = {
                        "score": math.nan,
                        "nan_reason": UNREADABLE,
                        "error": f"{type(exc).__name__}: {exc}",
                    }
            by_size: dict[tuple[int, ...], list[str]] = {}
            for f, im in loaded.items():
                by_size.setdefault(tuple(im.shape[-2:]), []).append(f)
            for group in by_size.values():
                batch = torch.cat([loaded[f] for f in group])
                meta = [dict(rows.get(f, {})) for f in group]
                prompts = [str(m.get("prompt", "")) for m in meta]
                out = reward(images=batch, prompts=prompts, metadata=meta)
                for f, row in zip(group, out.rows(), strict=True):
                    results[f] = {**row, "error": ""}
            if sink is not None:
                for f in chunk:
                    line = {"file": f, "reward": reward.id, "meta": _meta_key(rows.get(f)), "row": results[f]}
                    sink.write(json.dumps(line, default=str) + "\n")
                sink.flush()
            bar.update(len(chunk))

    table = []
    for f in files:
        table.append(
            {"file": f, "prompt": str(rows.get(f, {}).get("prompt", "")), "reward": reward.id, **results[f]}
        )
    if layout is not None:  # prompt folders that could not be scored, with their reason
        table += official.problem_rows(layout, reward.id)
    df = pd.DataFrame(table)
    first = ["file", "prompt", "reward", "score"]
    last = [c for c in ("nan_reason", "error") if c in df.columns]
    df[last] = df[last].fillna("")
    middle = [c for c in df.columns if c not in first and c not in last]
    return df[first + middle + last]


def _meta_key(row: Mapping[str, Any] | None) -> str:
    return json.dumps(row or {}, sort_keys=True, default=str)


def _resume(
    path: str | Path, reward_id: str, rows: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Rows of an earlier, interrupted run in ``path`` that are still valid for this one."""
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # the line an interrupted run was writing
            continue
        if rec.get("reward") == reward_id and rec.get("meta") == _meta_key(rows.get(rec.get("file"))):
            out[rec["file"]] = rec["row"]
    return out


def reward_check_metadata(reward: Any, rows: Mapping[str, Mapping[str, Any]], source: Any) -> None:
    """Let the reward (and each component of a sum) refuse malformed metadata before any scoring,
    naming the metadata file and the image."""
    check = getattr(reward, "check_metadata", None)
    if check is None:
        return
    for file, row in rows.items():
        try:
            check(row)
        except ConfigError as exc:
            raise ConfigError(f"{source}: row of {file!r}: {exc}") from exc


def summarize(df: pd.DataFrame) -> str:
    """A few lines for the terminal: mean score, NaN and unreadable counts, GenEval task accuracies."""
    n = len(df)
    scores = pd.to_numeric(df["score"], errors="coerce")
    errors = int((df.get("error", pd.Series([""] * n)).fillna("") != "").sum())
    reward = df["reward"].iloc[0] if n else "?"
    mean = f"{scores.mean():.4f}" if scores.notna().any() else "nan"
    lines = [
        f"{reward}: {n} images, mean score {mean} (scored {int(scores.notna().sum())}, unreadable {errors})"
    ]
    for prefix in ("", "geneval."):
        if f"{prefix}correct" in df.columns and f"{prefix}tag" in df.columns:
            from tdm_r1.rewards.geneval import geneval_summary

            tagged = df[df[f"{prefix}tag"].fillna("") != ""]
            if len(tagged):
                summary = geneval_summary(tagged, column=f"{prefix}correct", tag_column=f"{prefix}tag")
                lines.append("GenEval " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return "\n".join(lines)
