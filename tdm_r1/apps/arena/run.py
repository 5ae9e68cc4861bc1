"""Running the arena: train each cell, evaluate its checkpoints and its start model, record rows.

Each cell (method x start x reward x seed) trains and evaluates its budget checkpoints in its own
process (:mod:`tdm_r1.apps.arena.worker`); ``jobs`` cells run at once, each with its share of the
cores. This process then pairs every checkpoint with the start model (evaluated here, once: the
eval runner caches it) and writes one row per checkpoint: the in-domain metric on all, seen and
unseen cases, the out-of-domain metric, and what training had cost by then. The table is
rewritten after every cell, so nothing finished is lost; a cell whose rows carry the same config
hash and ``status = ok`` is skipped; a failed or interrupted cell is tried again (and resumes
from its checkpoints).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tdm_r1.apps.arena.grid import (
    ARENA_VERSION,
    SUITE_TASK,
    SUITES,
    Cell,
    all_cells,
    cell_config,
    cell_hash,
)
from tdm_r1.apps.arena.worker import CellProcess, checkpoints
from tdm_r1.eval.arena_table import ARENA_DIR, COLUMNS, SUBSETS, read_table, table_path

log = logging.getLogger(__name__)
#: Seconds between polls of the running cells (a bound on every wait: children end or fail).
_POLL_S = 0.5


@dataclass(frozen=True)
class ArenaPaths:
    """Where the arena writes: tables, curves and grids (``results/arena``), per-checkpoint
    evaluation files (``results/arena/evals``), the training runs (``runs/arena``)."""

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


def training_stats(run_dir: Path) -> dict[str, Any]:
    """Reward evaluations, wall-clock and peak memory from ``metrics.jsonl`` (the last record of
    each epoch: a resumed run may have logged an epoch twice), and the per-epoch curve."""
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
                "rollout_s": float(sum(x["time_rollout_s"] for x in epochs[: i + 1])),
                "train_reward": float(m.get("reward_mean", math.nan)),
            }
            for i, m in enumerate(epochs)
        ],
    }


def _evaluate(model: Any, reward: str, paths: ArenaPaths, batch_size: int, progress: bool) -> dict[str, Any]:
    """Evaluate ``model`` (a name or a preset) on the reward's two arena suites (cached)."""
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

    from tdm_r1.models.preset import load_preset_file
    from tdm_r1.registry import MODELS

    registered = MODELS.get(cell.model)
    sampling = load_preset_file(final / "preset.json").sampling
    if sampling == registered.sampling:
        return cell.model
    name = f"{cell.model}-{sampling.steps}steps-cfg{sampling.guidance:g}"
    return dataclasses.replace(registered, name=name, sampling=sampling)


def subset_values(values: pd.DataFrame | None, suite: str, subset: str) -> pd.DataFrame | None:
    """The rows of ``subset`` ("all" | "seen" | "unseen" by RL training) of a suite's values."""
    from tdm_r1.toyworld.grammar import rl_unseen_ids

    if values is None or subset == "all":
        return values
    unseen = values["prompt_id"].isin(rl_unseen_ids(SUITE_TASK[suite]))
    return values[unseen if subset == "unseen" else ~unseen]


def _summary_value(result: Any, metric: str) -> tuple[float, float]:
    rows = result.summary[result.summary["metric"] == metric]
    if rows.empty:
        raise RuntimeError(f"{result.model} on {result.benchmark}: no {metric!r} in the summary")
    return float(rows["mean"].iloc[0]), float(rows["nfe"].iloc[0])


def measure_checkpoint(
    cell: Cell, name: str, start: Any, paths: ArenaPaths, batch_size: int, progress: bool
) -> dict[str, Any]:
    """One checkpoint's metric and paired-delta columns: in-domain on all / seen / unseen cases
    and out-of-domain, each against the start model on the same cases and seeds."""
    from tdm_r1.eval.paired import compare
    from tdm_r1.eval.results import read_values
    from tdm_r1.eval.values import metric_value

    base = _evaluate(start, cell.reward, paths, batch_size, progress)
    row: dict[str, Any] = {"start_model": start if isinstance(start, str) else start.name, "checkpoint": name}
    for side, (suite, metric) in zip(("in", "ood"), SUITES[cell.reward], strict=True):
        trained = read_values(suite, name, paths.evals)
        if trained is None:
            raise RuntimeError(f"{paths.evals}/{suite}: no values for {name}: the worker did not evaluate it")
        before = read_values(suite, base[suite].model, paths.evals)
        row[f"{side}_suite"], row[f"{side}_metric"] = suite, metric
        row["start_nfe" if side == "in" else "_"] = _summary_value(base[suite], metric)[1]
        for subset in SUBSETS if side == "in" else ("all",):
            pre = f"{side}_" if subset == "all" else f"{side}_{subset}_"
            a, b = subset_values(trained, suite, subset), subset_values(before, suite, subset)
            d = compare(a, b, metric)
            row |= {
                f"{pre}start": metric_value(b, metric),
                f"{pre}value": metric_value(a, metric),
                f"{pre}delta": d.delta,
                f"{pre}ci_low": d.ci_low,
                f"{pre}ci_high": d.ci_high,
                f"{pre}significant": d.significant,
            }
    row.pop("_", None)
    return row


def _base_row(cell: Cell, digest: str, budget: int, threads: int) -> dict[str, Any]:
    (in_suite, in_metric), (ood_suite, ood_metric) = SUITES[cell.reward]
    return {
        "reward": cell.reward,
        "method": cell.method,
        "model": cell.model,
        "seed": cell.seed,
        "run": cell.run_name,
        "budget": budget,
        "in_suite": in_suite,
        "in_metric": in_metric,
        "ood_suite": ood_suite,
        "ood_metric": ood_metric,
        "device": _device(threads),
        "config_hash": digest,
        "arena_version": ARENA_VERSION,
    }


def _device(threads: int) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else f"cpu x{threads} threads"


def cell_rows(
    cell: Cell,
    cfg: Any,
    digest: str,
    paths: ArenaPaths,
    *,
    threads: int,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows (one per budget checkpoint) and the training curve of a cell whose worker finished."""
    from tdm_r1.models.preset import load_preset_file

    budget = cfg.max_epochs * cfg.samples_per_epoch
    stats = training_stats(cfg.run_dir())
    curve = stats.pop("curve")
    final = cfg.run_dir() / "final"
    start = start_model(cell, final)
    nfe = float(load_preset_file(final / "preset.json").sampling.nfe)
    rows = []
    for epoch, name in checkpoints(cell, cfg).items():
        at = curve[epoch - 1]
        spent = {
            "epoch": epoch,
            "reward_evals": at["reward_evals"],
            "train_images": at["reward_evals"],
            "wall_clock_s": at["wall_clock_s"],
            "rollout_s": at["rollout_s"],
            "nfe": nfe,
        }
        measured = measure_checkpoint(cell, name, start, paths, batch_size, progress)
        rows.append(
            _base_row(cell, digest, budget, threads)
            | stats
            | spent
            | measured
            | {"status": "ok", "error": ""}
        )
    return rows, curve


def error_row(cell: Cell, cfg: Any, digest: str, threads: int, exc: BaseException) -> dict[str, Any]:
    from tdm_r1.errors import user_error_message

    message = user_error_message(exc) or f"{type(exc).__name__}: {exc}"
    log.error("arena cell %s seed %d (%s) failed: %s", cell.label, cell.seed, cell.reward, message)
    budget = cfg.max_epochs * cfg.samples_per_epoch
    return _base_row(cell, digest, budget, threads) | {
        "status": "error",
        "error": message,
        "epoch": cfg.max_epochs,
    }


def _same_cell(table: pd.DataFrame, method: str, model: str, seed: int) -> pd.Series:
    seeds = pd.to_numeric(table["seed"], errors="coerce").fillna(0).astype(int)
    return (table["method"] == method) & (table["model"] == model) & (seeds == seed)


def is_done(table: pd.DataFrame, cell: Cell, digest: str, n_checkpoints: int) -> bool:
    hit = table[_same_cell(table, cell.method, cell.model, cell.seed)]
    return (
        len(hit) == n_checkpoints
        and bool((hit["status"] == "ok").all())
        and bool((hit["config_hash"].astype(str) == digest).all())
    )


def upsert(table: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The table with ``rows`` (one cell's) replacing that cell's old rows, in the grid's order
    (then seed, then checkpoint)."""
    first = rows[0]
    keep = table[~_same_cell(table, first["method"], first["model"], int(first["seed"]))]
    new = pd.DataFrame([{c: r.get(c, math.nan) for c in COLUMNS} for r in rows])
    out = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    order = {cell: i for i, cell in enumerate(all_cells())}
    out["_o"] = [order.get((m, s), len(order)) for m, s in zip(out["method"], out["model"], strict=True)]
    out["_s"] = pd.to_numeric(out["seed"], errors="coerce").fillna(0)
    out["_e"] = pd.to_numeric(out["epoch"], errors="coerce").fillna(0)
    return (
        out.sort_values(["_o", "_s", "_e"], kind="stable")
        .drop(columns=["_o", "_s", "_e"])
        .reset_index(drop=True)
    )


def curves_path(paths: ArenaPaths, reward: str) -> Path:
    return paths.arena / f"{reward}.curves.csv"


CURVE_COLUMNS = ["method", "model", "seed", "epoch", "reward_evals", "wall_clock_s", "train_reward"]


def save_curve(paths: ArenaPaths, cell: Cell, curve: list[dict[str, Any]]) -> None:
    """Replace the cell's training curve in ``results/arena/<reward>.curves.csv``."""
    from tdm_r1.eval.cache import atomic_write_text

    path = curves_path(paths, cell.reward)
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(old):
        if "seed" not in old:
            old["seed"] = 0
        old = old[~_same_cell(old, cell.method, cell.model, cell.seed)]
    new = pd.DataFrame(curve).assign(method=cell.method, model=cell.model, seed=cell.seed)
    both = pd.concat([old, new], ignore_index=True) if len(old) else new
    atomic_write_text(path, both.loc[:, CURVE_COLUMNS].to_csv(index=False, lineterminator="\n"))


def run_grid(
    cells: list[Cell],
    budget: int,
    paths: ArenaPaths,
    *,
    jobs: int = 1,
    batch_size: int = 32,
    progress: bool = True,
    debug: bool = False,
    echo: Any = print,
) -> dict[str, pd.DataFrame]:
    """Run every cell not already done, ``jobs`` at a time; rewrite its reward's table after each.
    Returns the tables."""
    from tqdm.auto import tqdm

    from tdm_r1.eval.cache import atomic_write_text

    paths.arena.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    tables = {r: read_table(table_path(paths.results, r)) for r in dict.fromkeys(c.reward for c in cells)}
    todo = []
    for cell in cells:
        cfg = cell_config(cell, budget, paths.runs)
        digest = cell_hash(cfg, suite_versions(cell.reward))
        if is_done(tables[cell.reward], cell, digest, len(checkpoints(cell, cfg))):
            echo(f"{cell.reward}: {cell.label} seed {cell.seed}: done (same config), skipped")
        else:
            todo.append((cell, cfg, digest))
    bar = tqdm(total=len(todo), desc="arena", unit="cell", disable=not progress, position=0)
    running: list[CellProcess] = []

    def finish(cell: Cell, cfg: Any, digest: str, exc: BaseException | None) -> None:
        curve: list[dict[str, Any]] = []
        try:
            if exc is not None:
                raise exc
            rows, curve = cell_rows(
                cell, cfg, digest, paths, threads=threads, batch_size=batch_size, progress=False
            )
        except Exception as err:  # noqa: BLE001 - a failed cell is its row; the grid goes on
            if debug:
                raise
            rows = [error_row(cell, cfg, digest, threads, err)]
        tables[cell.reward] = upsert(tables[cell.reward], rows)
        atomic_write_text(
            table_path(paths.results, cell.reward),
            tables[cell.reward].to_csv(index=False, lineterminator="\n"),
        )
        if curve:
            save_curve(paths, cell, curve)
        status = rows[0]["status"]
        echo(
            f"{cell.reward}: {cell.label} seed {cell.seed}: {status}"
            + (f" ({rows[0]['error']})" if rows[0]["error"] else "")
        )
        bar.update(1)

    while todo or running:
        while todo and len(running) < jobs:
            cell, cfg, digest = todo.pop(0)
            bar.set_postfix_str(f"{cell.reward}: {cell.label} s{cell.seed}")
            try:
                running.append(
                    CellProcess(
                        cell,
                        cfg,
                        paths.evals,
                        threads=threads,
                        batch_size=batch_size,
                        debug=debug,
                        echo_child=jobs == 1 and progress,
                    )
                )
            except Exception as exc:  # noqa: BLE001 - e.g. a changed config refused for resume: its row
                finish(cell, cfg, digest, exc)
                continue
            running[-1].digest = digest
        for proc in list(running):
            try:
                if jobs == 1:
                    proc.wait()
                elif not proc.poll():
                    continue
                err = None
            except Exception as exc:  # noqa: BLE001 - kept for the cell's error row
                err = exc
            running.remove(proc)
            finish(proc.cell, proc.cfg, proc.digest, err)
        if running:
            time.sleep(_POLL_S)
    bar.close()
    return tables
