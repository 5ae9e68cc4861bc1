"""Interoperability with the official GenEval tools (djghosh13/geneval).

Two formats:

* **Generation layout** (what ``generation/diffusers_generate.py`` writes and every GenEval user
  has on disk): ``<outdir>/<index>/metadata.jsonl`` (one JSON object: the prompt's line of
  ``evaluation_metadata.jsonl``) and ``<outdir>/<index>/samples/<k>.png`` (``grid.png`` beside
  them is ignored). The official evaluator reads numeric folders and ``\\d+\\.png`` files only;
  so does :func:`read_generation_layout`. A prompt folder without a readable ``metadata.jsonl``
  or with no sample images is reported with its reason and left out; the rest is scored.
* **Results JSONL** (what ``evaluation/evaluate_images.py`` writes and ``summary_scores.py``
  reads): one JSON object per image with ``filename``, ``tag``, ``prompt``, ``correct`` (bool),
  ``reason``, ``metadata`` (the prompt's metadata as a JSON string: the summary groups images by
  it to count correct prompts) and ``details`` (JSON: kept detections per class, ``[x0, y0, x1,
  y1, score]``). :func:`results_records` builds it from tdmbench's per-sample rows, so the
  official ``summary_scores.py`` run on it gives the same overall and task scores as tdmbench.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_NAME = re.compile(r"\d+\.png")
NO_METADATA = "no metadata.jsonl"
EMPTY_SAMPLES = "samples/ is empty (no <number>.png)"


@dataclass
class GenerationLayout:
    """What :func:`read_generation_layout` found.

    Attributes:
        files: sample images (POSIX paths relative to the folder), in folder then sample order.
        rows: metadata per file (the prompt's object plus ``file``).
        problems: ``(prompt folder, reason)`` for prompt folders that cannot be scored.
    """

    files: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def is_generation_layout(folder: str | Path) -> bool:
    """True when ``folder`` holds numeric prompt folders with ``metadata.jsonl`` or ``samples/``."""
    root = Path(folder)
    if not root.is_dir():
        return False
    subs = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return any((p / "metadata.jsonl").is_file() or (p / "samples").is_dir() for p in subs)


def _read_prompt_metadata(path: Path) -> dict[str, Any] | str:
    """The prompt's metadata object, or the reason it cannot be read."""
    if not path.is_file():
        return NO_METADATA
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        obj = json.loads(lines[0]) if lines else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"metadata.jsonl is not readable JSON ({exc})"
    if not isinstance(obj, dict) or "prompt" not in obj:
        return 'metadata.jsonl has no JSON object with a "prompt"'
    return obj


def read_generation_layout(folder: str | Path, *, warn: bool = True) -> GenerationLayout:
    """Read an official GenEval generation folder (see the module docstring); ``warn`` logs each
    skipped prompt folder."""
    root = Path(folder)
    out = GenerationLayout()
    for sub in sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: p.name):
        meta = _read_prompt_metadata(sub / "metadata.jsonl")
        samples = sub / "samples"
        names = (
            sorted(p.name for p in samples.iterdir() if SAMPLE_NAME.fullmatch(p.name))
            if samples.is_dir()
            else []
        )
        if isinstance(meta, str):
            out.problems.append((sub.name, meta))
            continue
        if not names:
            out.problems.append((sub.name, EMPTY_SAMPLES if samples.is_dir() else "no samples/ folder"))
            continue
        for name in names:
            file = f"{sub.name}/samples/{name}"
            out.files.append(file)
            out.rows[file] = {**meta, "file": file}
    for where, why in out.problems if warn else []:
        log.warning("GenEval prompt folder %s is skipped: %s", where, why)
    return out


def problem_rows(layout: GenerationLayout, reward_id: str) -> list[dict[str, Any]]:
    """One output row per skipped prompt folder: NaN score with the reason."""
    return [
        {
            "file": f"{where}/",
            "prompt": "",
            "reward": reward_id,
            "score": math.nan,
            "nan_reason": why,
            "error": why,
        }
        for where, why in layout.problems
    ]


# ---------------------------------------------------------------------------------- results
def _official_details(detections: str) -> str:
    """tdmbench's ``{class: [[x0,y0,x1,y1,score,color]]}`` -> GenEval's ``{class: [[x0,y0,x1,y1,score]]}``."""
    try:
        parsed = json.loads(detections) if detections else {}
    except json.JSONDecodeError:
        return "{}"
    return json.dumps({c: [list(d[:5]) for d in ds] for c, ds in parsed.items()})


def results_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Official per-image result records from rows with ``prompt``, ``metadata`` (dict or JSON),
    ``details`` (dict or JSON with ``correct``, ``reason``, ``tag``, ``detections``), a
    ``filename`` and ``score``. Rows that were not scored (NaN ``correct``) are left out, as the
    official evaluator has no such rows either."""
    out = []
    for row in rows:
        details = row["details"] if isinstance(row["details"], dict) else json.loads(row["details"] or "{}")
        meta = row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"] or "{}")
        correct = details.get("correct", row.get("score"))
        if correct is None or (isinstance(correct, float) and math.isnan(correct)):
            continue
        meta = {k: v for k, v in meta.items() if k != "file"}
        meta["prompt"] = row["prompt"]
        out.append(
            {
                "filename": row["filename"],
                "tag": str(meta.get("tag", details.get("tag", ""))),
                "prompt": row["prompt"],
                "correct": bool(float(correct) >= 0.5),
                "reason": str(details.get("reason", "")),
                "metadata": json.dumps(meta, sort_keys=True),
                "details": _official_details(str(details.get("detections", ""))),
            }
        )
    return out


def records_from_samples(samples: Any, metric: str) -> list[dict[str, Any]]:
    """Official records from an eval run's per-sample table (one GenEval metric)."""
    sub = samples[samples["metric"] == metric]
    rows = [
        {
            "filename": f"{r.prompt_id}/samples/{int(r.sample):04d}.png",
            "prompt": r.prompt,
            "metadata": r.metadata,
            "details": r.details,
            "score": r.score,
        }
        for r in sub.itertuples(index=False)
    ]
    return results_records(rows)


def write_results_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write the records as JSON Lines (atomically)."""
    from tdm_r1.eval.cache import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return path


def records_from_score_table(
    df: Any, images_dir: str | Path, metadata: str | Path | None = None
) -> list[dict[str, Any]]:
    """Official records from a ``tdmbench score`` table with GenEval columns (``correct``,
    ``reason``, ``tag``, ``detections``, plain or ``geneval.``-prefixed in a weighted sum); the
    prompt metadata is read again from the generation layout or the ``metadata`` file."""
    from tdm_r1.prompt_files import read_metadata

    if metadata is not None:
        meta = read_metadata(metadata, images_dir)
    else:
        layout = read_generation_layout(images_dir, warn=False) if is_generation_layout(images_dir) else None
        meta = layout.rows if layout is not None else {}
    prefix = "" if "correct" in df.columns else "geneval."
    rows = []
    for r in df.to_dict("records"):
        if r["file"] not in meta:
            continue
        details = {k: r.get(prefix + k) for k in ("correct", "reason", "tag", "detections")}
        details = {
            k: ("" if v is None or (isinstance(v, float) and math.isnan(v) and k != "correct") else v)
            for k, v in details.items()
        }
        rows.append(
            {
                "filename": r["file"],
                "prompt": r["prompt"],
                "metadata": meta[r["file"]],
                "details": details,
                "score": r.get("score"),
            }
        )
    return results_records(rows)


def has_geneval_columns(df: Any) -> bool:
    return any({p + "correct", p + "tag"} <= set(df.columns) for p in ("", "geneval."))
