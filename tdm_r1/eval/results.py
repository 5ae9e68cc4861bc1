"""The on-disk layout of evaluation results (the contract that scripts depend on).

::

    results/<benchmark>/<model>.csv              summary: one row per metric (committed)
    results/<benchmark>/<model>.meta.json        tdmbench version, model config, rewards (committed)
    results/<benchmark>/<model>.samples.parquet  one row per image x reward (not committed)
    results/<benchmark>/<model>.scores.csv       per-sample metric values, for paired deltas (committed)
    results/<benchmark>/<model>.geneval_results.jsonl  GenEval suites: the official per-image results
                                                 format (summary_scores.py reads it; not committed)
    results/<benchmark>/partial/<model>.limit<N>.*  a ``--limit N`` run: the same files, kept
                                                 apart so that a partial run never replaces a full
                                                 one (the leaderboard reads only full runs)
    results/leaderboard.{csv,md}                 built by `tdmbench leaderboard` (committed)
    results/reference/published.csv              published numbers with their sources (committed)

Folders under ``results/`` that are not benchmarks (``reference``, ``perf``, ``plots``, ``report``)
are never read as benchmark results.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tdm_r1.errors import UnreadableFileError, excerpt
from tdm_r1.eval.cache import atomic_write_text, stable_json
from tdm_r1.eval.values import sample_values
from tdm_r1.paths import results_dir as default_results_dir

#: Columns of ``results/<benchmark>/<model>.csv``, in order (the contract, then versions).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "benchmark",
    "metric",
    "mean",
    "std",
    "n",
    "ci_low",
    "ci_high",
    "nfe",
    "reward",
    "reward_version",
    "benchmark_version",
    "tdmbench_version",
    "model_config_hash",
    "protocol",
    "protocol_status",
)
#: Provenance columns (``tdm_r1.eval.provenance``); files written before them are read with "".
PROTOCOL_COLUMNS: tuple[str, ...] = ("protocol", "protocol_status")

#: Columns of the per-sample parquet, in order.
SAMPLE_COLUMNS: tuple[str, ...] = (
    "model",
    "benchmark",
    "benchmark_version",
    "prompt_id",
    "prompt",
    "metadata",
    "sample",
    "seed",
    "image_key",
    "image_sha256",
    "reward",
    "reward_version",
    "reward_options",
    "metric",
    "role",
    "score",
    "nan_reason",
    "details",
    "tdmbench_version",
    "model_config_hash",
)

NOT_BENCHMARKS = frozenset({"reference", "perf", "plots", "report", "arena"})
#: The small per-sample file that is committed (the parquet is not): what paired deltas read.
SCORES_SUFFIX = ".scores.csv"


def file_stem(model: str) -> str:
    """A model name as a file name (``/`` and ``:`` of run paths become ``__``)."""
    return model.replace("/", "__").replace(":", "__")


@dataclass(frozen=True)
class RunFiles:
    csv: Path
    meta: Path
    samples: Path
    scores: Path
    geneval_results: Path


def run_files(benchmark: str, model: str, root: Path | None = None, *, limit: int | None = None) -> RunFiles:
    """The files of one run; ``limit`` (a run on the first ``limit`` prompts only) puts them under
    ``partial/`` with a ``.limit<N>`` suffix, out of reach of the leaderboard and of full runs."""
    folder = (root or default_results_dir()) / benchmark
    stem = file_stem(model)
    if limit is not None:
        folder, stem = folder / "partial", f"{stem}.limit{limit}"
    return RunFiles(
        csv=folder / f"{stem}.csv",
        meta=folder / f"{stem}.meta.json",
        samples=folder / f"{stem}.samples.parquet",
        scores=folder / f"{stem}{SCORES_SUFFIX}",
        geneval_results=folder / f"{stem}.geneval_results.jsonl",
    )


def summary_csv_text(summary: pd.DataFrame) -> str:
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks columns {missing}")
    buf = io.StringIO()
    summary.loc[:, list(SUMMARY_COLUMNS)].to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def write_run(files: RunFiles, summary: pd.DataFrame, samples: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write the run's files atomically (samples first, the summary CSV last)."""

    files.csv.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=files.samples.parent, prefix=f".{files.samples.name}.", suffix=".tmp")
    os.close(fd)
    try:
        samples.loc[:, list(SAMPLE_COLUMNS)].to_parquet(tmp, index=False)
        os.replace(tmp, files.samples)
    finally:
        Path(tmp).unlink(missing_ok=True)
    values = sample_values(samples, meta.get("benchmark", {}))
    atomic_write_text(files.scores, values.to_csv(index=False, lineterminator="\n"))
    geneval = [r["metric"] for r in meta.get("rewards", []) if r.get("aggregate") == "geneval"]
    if geneval:  # the official GenEval results JSONL, for summary_scores.py
        from tdm_r1.eval.geneval_official import records_from_samples, write_results_jsonl

        write_results_jsonl(files.geneval_results, records_from_samples(samples, geneval[0]))
    atomic_write_text(files.meta, json.dumps(json.loads(stable_json(meta)), indent=2, sort_keys=True) + "\n")
    atomic_write_text(files.csv, summary_csv_text(summary))


def _partial_limit(path: Path) -> int | None:
    """N of ``partial/<stem>.limit<N>.csv``, else None."""
    head, _, tail = path.name.removesuffix(".csv").rpartition(".limit")
    return int(tail) if head and tail.isdigit() else None


#: Summary columns every row must fill (the protocol columns may be empty).
REQUIRED_VALUES: tuple[str, ...] = ("model", "benchmark", "metric", "mean", "n")


def read_summary_file(path: Path) -> pd.DataFrame | None:
    """One summary CSV with the summary columns; None for a CSV that is no result (another tool's
    table next to the results, without a ``meta.json``); :class:`UnreadableFileError` naming the
    file for a result that cannot be read whole (cut short, garbage, columns or values missing)."""
    from tdm_r1.csv_files import check_complete, read_csv

    what = "results file"
    is_result = path.with_name(path.name.removesuffix(".csv") + ".meta.json").is_file()
    text = dict.fromkeys(("reward_version", "benchmark_version", "model_config_hash", *PROTOCOL_COLUMNS), str)
    df = read_csv(path, what, dtype=text)
    needed = set(SUMMARY_COLUMNS) - set(PROTOCOL_COLUMNS)
    if not needed <= set(df.columns):
        if not is_result and not {"model", "benchmark"} <= set(df.columns):
            return None
        raise UnreadableFileError(
            f"{what} {path}: lacks the column(s) {sorted(needed - set(df.columns))} (cut short?): "
            "rerun its `tdmbench eval` or restore the file"
        )
    check_complete(path, what)
    empty = df[list(REQUIRED_VALUES)].isna().any(axis=1)
    if empty.any():
        line = int(empty.to_numpy().nonzero()[0][0]) + 2
        raise UnreadableFileError(
            f"{what} {path}:{line}: a row without {', '.join(REQUIRED_VALUES)} (cut short?): "
            "rerun its `tdmbench eval` or restore the file"
        )
    for col in PROTOCOL_COLUMNS:
        df[col] = df[col].fillna("") if col in df.columns else ""
    return df.loc[:, list(SUMMARY_COLUMNS)]


def read_summaries(root: Path | None = None, *, skipped: list[str] | None = None) -> pd.DataFrame:
    """Every ``results/<benchmark>/*.csv`` with the summary columns, concatenated.

    A model with only partial runs of a benchmark (``partial/``) is represented by its largest
    one (its meta's ``limit`` labels it); a full run always wins over partial ones. A results file
    that cannot be read whole is an error naming it; with ``skipped`` (a list) it is left out and
    its ``"<file>: <why>"`` appended there instead (``tdmbench leaderboard --skip-broken``).
    """
    root = root or default_results_dir()
    frames = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in NOT_BENCHMARKS):
            full = sorted(p for p in folder.glob("*.csv") if not p.name.endswith(SCORES_SUFFIX))
            partial: dict[str, tuple[int, Path]] = {}
            for path in sorted((folder / "partial").glob("*.limit*.csv")):
                if path.name.endswith(SCORES_SUFFIX):
                    continue
                n = _partial_limit(path)
                stem = path.name.removesuffix(f".limit{n}.csv")
                if (
                    n is not None
                    and not (folder / f"{stem}.csv").is_file()
                    and n > partial.get(stem, (0,))[0]
                ):
                    partial[stem] = (n, path)
            for path in full + [p for _, p in sorted(partial.values(), key=lambda x: x[1])]:
                try:
                    df = read_summary_file(path)
                except UnreadableFileError as exc:
                    if skipped is None:
                        raise
                    skipped.append(str(exc).removeprefix("results file "))
                    continue
                if df is not None:
                    frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def best_run_files(benchmark: str, model: str, root: Path | None = None) -> RunFiles:
    """The full run's files, else those of the largest partial run, else the (absent) full ones."""
    full = run_files(benchmark, model, root)
    if full.csv.is_file():
        return full
    limits = [_partial_limit(p) for p in (full.csv.parent / "partial").glob(f"{file_stem(model)}.limit*.csv")]
    limits = [n for n in limits if n is not None]
    return run_files(benchmark, model, root, limit=max(limits)) if limits else full


def read_meta(benchmark: str, model: str, root: Path | None = None) -> dict[str, Any]:
    path = best_run_files(benchmark, model, root).meta
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(
            f"run metadata {path}: not valid JSON ({excerpt(str(exc), 120)}): rerun its `tdmbench eval` or restore it"
        ) from exc


def read_samples(benchmark: str, model: str, root: Path | None = None) -> pd.DataFrame:
    """The per-sample table of one run (``FileNotFoundError`` if it was not kept)."""
    from tdm_r1.csv_files import read_parquet

    return read_parquet(best_run_files(benchmark, model, root).samples, "per-sample results file")


def read_values(benchmark: str, model: str, root: Path | None = None) -> pd.DataFrame | None:
    """The per-sample metric values of one run (``tdm_r1.eval.values.VALUE_COLUMNS``): the
    committed ``.scores.csv``, else derived from the parquet and ``meta.json``; ``None`` if neither
    was kept."""
    from tdm_r1.csv_files import read_csv

    files = best_run_files(benchmark, model, root)
    if files.scores.is_file():
        return read_csv(
            files.scores,
            "per-sample scores file",
            dtype={
                "prompt_id": str,
                "group": str,
                "reward_version": str,
                "benchmark_version": str,
                "model_config_hash": str,
            },
            keep_default_na=False,
            na_values={"value": ["", "NaN", "nan"]},
        )
    if files.samples.is_file():
        from tdm_r1.csv_files import read_parquet

        samples = read_parquet(files.samples, "per-sample results file")
        return sample_values(samples, read_meta(benchmark, model, root).get("benchmark", {}))
    return None
