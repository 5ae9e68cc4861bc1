"""Running the arena: train each cell, evaluate it and its start model, record one row per cell.

Each cell trains in its own process (``python -m tdm_r1.cli train --config <run>/config.yaml``):
its peak memory is its own, a crash or an error is the cell's and the grid goes on, and an
interrupted cell resumes from its checkpoints on the next ``tdmbench arena``. The table is
rewritten after every cell, so nothing finished is lost. A cell whose row carries the same config
hash and ``status = ok`` is skipped; a failed cell is tried again.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tdm_r1.arena.grid import ARENA_VERSION, SUITES, Cell, cell_config, cell_hash
from tdm_r1.eval.arena_table import ARENA_DIR, COLUMNS, read_table, table_path

log = logging.getLogger(__name__)
#: Bytes of a failed child's stderr kept to find its error line.
_TAIL = 8192


@dataclass(frozen=True)
class ArenaPaths:
    """Where the arena writes: tables, curves and grids (``results/arena``), per-cell evaluation
    files (``results/arena/evals``), the training runs (``runs/arena``)."""

    results: Path
    runs: Path

    @property
    def arena(self) -> Path:
        return self.results / ARENA_DIR

    @property
    def evals(self) -> Path:
        return self.arena / "evals"


def suite_versions(reward: str) -> dict[str, str]:
    from tdm_r1.registry import BENCHMARKS

    return {name: str(BENCHMARKS.get(name).version) for (name, _) in SUITES[reward]}


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("error:"):
            return ln[len("error:") :].strip()
    return lines[-1] if lines else "no output"


def train_cell(cfg: Any, *, debug: bool = False) -> None:
    """Train (or resume, or find finished) one cell's run in a child process; raise on failure."""
    from tdm_r1.train.resume import write_run_config

    path = write_run_config(cfg)
    argv = [
        sys.executable,
        "-m",
        "tdm_r1.cli",
        *(["--debug"] if debug else []),
        "train",
        "--config",
        str(path),
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, env=os.environ.copy())
    tail = b""
    assert proc.stderr is not None
    while chunk := proc.stderr.read1(4096):  # pass the child's progress bar through, keep a tail
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        tail = (tail + chunk)[-_TAIL:]
    if proc.wait() != 0:
        raise RuntimeError(
            f"training failed (exit {proc.returncode}): {_error_line(tail.decode(errors='replace'))}"
        )


def training_stats(run_dir: Path) -> dict[str, Any]:
    """Reward evaluations, wall-clock and peak memory from ``metrics.jsonl`` (the last record of
    each epoch: a resumed run may have logged an epoch twice)."""
    from tdm_r1.train.trainer import iter_history

    by_epoch = {int(m["epoch"]): m for m in iter_history(run_dir / "metrics.jsonl")}
    epochs = [by_epoch[e] for e in sorted(by_epoch)]
    if not epochs:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has no epoch: the run did not train")
    return {
        "epochs": len(epochs),
        "reward_evals": int(epochs[-1]["samples"]),
        "train_images": int(epochs[-1]["samples"]),
        "wall_clock_s": float(sum(m["time_epoch_s"] for m in epochs)),
        "rollout_s": float(sum(m["time_rollout_s"] for m in epochs)),
        "peak_mem_mb": float(max(m.get("peak_mem_mb", math.nan) for m in epochs)),
        "curve": [
            {
                "epoch": int(m["epoch"]),
                "reward_evals": int(m["samples"]),
                "wall_clock_s": float(sum(x["time_epoch_s"] for x in epochs[: i + 1])),
                "train_reward": float(m.get("reward_mean", math.nan)),
            }
            for i, m in enumerate(epochs)
        ],
    }


def _evaluate(model: Any, reward: str, paths: ArenaPaths, batch_size: int, progress: bool) -> dict[str, Any]:
    """Evaluate ``model`` (a name or an exported run folder) on the reward's two arena suites."""
    from tdm_r1.eval.runner import evaluate

    names = [name for (name, _) in SUITES[reward]]
    results = evaluate(model, names, batch_size=batch_size, results_root=paths.evals, progress=progress)
    return {r.benchmark: r for r in results}


def start_model(cell: Cell, final: Path) -> Any:
    """The run's start weights sampled the way the trained model samples, so that the delta is what
    training did: the registered start model when the sampling is the same; otherwise (DiffusionNFT
    exports a CFG-free sampler of the CFG teacher) the start model with the trained model's sampling,
    named ``<model>-<steps>steps-cfg<guidance>`` (the CFG start model is then another row's start)."""
    import dataclasses

    from tdm_r1.models.base import load_preset_file
    from tdm_r1.registry import MODELS

    registered = MODELS.get(cell.model)
    sampling = load_preset_file(final / "preset.json").sampling
    if sampling == registered.sampling:
        return cell.model
    name = f"{cell.model}-{sampling.steps}steps-cfg{sampling.guidance:g}"
    return dataclasses.replace(registered, name=name, sampling=sampling)


def _summary_value(result: Any, metric: str) -> tuple[float, float]:
    rows = result.summary[result.summary["metric"] == metric]
    if rows.empty:
        raise RuntimeError(f"{result.model} on {result.benchmark}: no {metric!r} in the summary")
    return float(rows["mean"].iloc[0]), float(rows["nfe"].iloc[0])


def measure_cell(cell: Cell, cfg: Any, paths: ArenaPaths, batch_size: int, progress: bool) -> dict[str, Any]:
    """Evaluate a trained cell and its start model; the row's metric and delta columns."""
    from tdm_r1.eval.paired import compare
    from tdm_r1.eval.results import read_values

    final = cfg.run_dir() / "final"
    if not (final / "preset.json").is_file():
        raise RuntimeError(f"{final}/preset.json is missing: the run did not finish")
    trained = _evaluate(final, cell.reward, paths, batch_size, progress)
    base = start_model(cell, final)
    start = _evaluate(base, cell.reward, paths, batch_size, progress)
    row: dict[str, Any] = {"start_model": base if isinstance(base, str) else base.name}
    for side, (suite, metric) in zip(("in", "ood"), SUITES[cell.reward], strict=True):
        value, nfe = _summary_value(trained[suite], metric)
        before, start_nfe = _summary_value(start[suite], metric)
        d = compare(
            read_values(suite, trained[suite].model, paths.evals),
            read_values(suite, start[suite].model, paths.evals),
            metric,
        )
        row |= {
            f"{side}_suite": suite,
            f"{side}_metric": metric,
            f"{side}_start": before,
            f"{side}_value": value,
            f"{side}_delta": d.delta,
            f"{side}_ci_low": d.ci_low,
            f"{side}_ci_high": d.ci_high,
            f"{side}_significant": d.significant,
        }
        if side == "in":
            row |= {"nfe": nfe, "start_nfe": start_nfe}
    return row


def _base_row(cell: Cell, digest: str, budget: int) -> dict[str, Any]:
    (in_suite, in_metric), (ood_suite, ood_metric) = SUITES[cell.reward]
    return {
        "reward": cell.reward,
        "method": cell.method,
        "model": cell.model,
        "run": cell.run_name,
        "budget": budget,
        "in_suite": in_suite,
        "in_metric": in_metric,
        "ood_suite": ood_suite,
        "ood_metric": ood_metric,
        "device": _device(),
        "config_hash": digest,
        "arena_version": ARENA_VERSION,
    }


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"


def run_cell(
    cell: Cell,
    cfg: Any,
    digest: str,
    paths: ArenaPaths,
    *,
    batch_size: int = 32,
    progress: bool = True,
    debug: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train, evaluate and measure one cell (``cfg``: :func:`cell_config`, ``digest``: its
    :func:`cell_hash`): (its table row, its training curve). Errors become the row's ``status =
    error`` (with ``--debug`` they propagate)."""
    budget = cfg.max_epochs * cfg.samples_per_epoch
    try:
        train_cell(cfg, debug=debug)
        stats = training_stats(cfg.run_dir())
        curve = stats.pop("curve")
        row = _base_row(cell, digest, budget) | stats | measure_cell(cell, cfg, paths, batch_size, progress)
        return row | {"status": "ok", "error": ""}, curve
    except Exception as exc:
        if debug:
            raise
        from tdm_r1.errors import user_error_message

        message = user_error_message(exc) or f"{type(exc).__name__}: {exc}"
        log.error("arena cell %s (%s) failed: %s", cell.label, cell.reward, message)
        return _base_row(cell, digest, budget) | {"status": "error", "error": message}, []


def is_done(table: pd.DataFrame, cell: Cell, digest: str) -> bool:
    hit = table[(table["method"] == cell.method) & (table["model"] == cell.model)]
    return bool(len(hit)) and str(hit["status"].iloc[0]) == "ok" and str(hit["config_hash"].iloc[0]) == digest


def upsert(table: pd.DataFrame, row: dict[str, Any]) -> pd.DataFrame:
    """The table with ``row`` replacing the cell's old row (or added), in the grid's order."""
    from tdm_r1.arena.grid import DEFAULT_CELLS

    keep = table[~((table["method"] == row["method"]) & (table["model"] == row["model"]))]
    new = pd.DataFrame([{c: row.get(c, math.nan) for c in COLUMNS}])
    out = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    order = {cell: i for i, cell in enumerate(DEFAULT_CELLS)}
    out["_o"] = [order.get((m, s), len(order)) for m, s in zip(out["method"], out["model"], strict=True)]
    return out.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def curves_path(paths: ArenaPaths, reward: str) -> Path:
    return paths.arena / f"{reward}.curves.csv"


def save_curve(paths: ArenaPaths, cell: Cell, curve: list[dict[str, Any]]) -> None:
    """Replace the cell's training curve in ``results/arena/<reward>.curves.csv``."""
    from tdm_r1.eval.cache import atomic_write_text

    path = curves_path(paths, cell.reward)
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(old):
        old = old[~((old["method"] == cell.method) & (old["model"] == cell.model))]
    new = pd.DataFrame(curve).assign(method=cell.method, model=cell.model)
    both = pd.concat([old, new], ignore_index=True) if len(old) else new
    cols = ["method", "model", "epoch", "reward_evals", "wall_clock_s", "train_reward"]
    atomic_write_text(path, both.loc[:, cols].to_csv(index=False, lineterminator="\n"))


def run_grid(
    cells: list[Cell],
    budget: int,
    paths: ArenaPaths,
    *,
    batch_size: int = 32,
    progress: bool = True,
    debug: bool = False,
    echo: Any = print,
) -> dict[str, pd.DataFrame]:
    """Run every cell not already done; rewrite its reward's table after each. Returns the tables."""
    from tqdm.auto import tqdm

    from tdm_r1.eval.cache import atomic_write_text

    paths.arena.mkdir(parents=True, exist_ok=True)
    tables = {r: read_table(table_path(paths.results, r)) for r in dict.fromkeys(c.reward for c in cells)}
    bar = tqdm(cells, desc="arena", unit="cell", disable=not progress, position=0)
    for cell in bar:
        bar.set_postfix_str(f"{cell.reward}: {cell.label}")
        cfg = cell_config(cell, budget, paths.runs)
        digest = cell_hash(cfg, suite_versions(cell.reward))
        if is_done(tables[cell.reward], cell, digest):
            echo(f"{cell.reward}: {cell.label}: done (same config), skipped")
            continue
        row, curve = run_cell(cell, cfg, digest, paths, batch_size=batch_size, progress=progress, debug=debug)
        tables[cell.reward] = upsert(tables[cell.reward], row)
        atomic_write_text(
            table_path(paths.results, cell.reward),
            tables[cell.reward].to_csv(index=False, lineterminator="\n"),
        )
        if curve:
            save_curve(paths, cell, curve)
        echo(f"{cell.reward}: {cell.label}: {row['status']}" + (f" ({row['error']})" if row["error"] else ""))
    return tables
