"""Per-sample value tables: one row per (prompt, sample, seed, metric) of a run, the unit that
paired comparisons (:mod:`tdm_r1.eval.paired`) and subset metrics are computed on.

A value is the number a suite's summary averages: the reward score, or for GenEval the image's
correctness under the official rule with its task as ``group``.
"""

from __future__ import annotations

import json
import math

import pandas as pd

#: Columns that identify one sample of a suite (the same for every model).
KEY: tuple[str, ...] = ("prompt_id", "sample", "seed")
#: Columns of a per-sample value table (see :func:`sample_values`).
VALUE_COLUMNS: tuple[str, ...] = (
    *KEY,
    "metric",
    "aggregate",
    "group",
    "value",
    "reward_version",
    "benchmark_version",
    "model_config_hash",
)


def sample_values(samples: pd.DataFrame, benchmark: dict) -> pd.DataFrame:
    """A run's per-sample table -> the values its metrics average (``VALUE_COLUMNS``).

    ``benchmark`` is the suite as recorded in ``meta.json`` (``Benchmark.to_dict()``); its reward
    uses say how each metric aggregates. A ``geneval``-aggregated use gives ``value`` = the image's
    correctness and ``group`` = its task; a ``mean`` use gives ``value`` = the score.
    """

    aggregates = {
        str(u.get("metric") or u["name"]): str(u.get("aggregate", "mean"))
        for role in ("in_domain", "out_of_domain")
        for u in benchmark.get(role, []) or []
    }
    rows = samples.loc[:, [*KEY, "metric", "score", "details", "metadata", "reward_version"]].copy()
    rows["aggregate"] = rows["metric"].map(lambda m: aggregates.get(str(m), "mean"))
    values, groups = [], []
    for agg, score, details, metadata in zip(
        rows["aggregate"], rows["score"], rows["details"], rows["metadata"], strict=True
    ):
        if agg == "geneval":
            d, m = json.loads(details), json.loads(metadata)
            values.append(float("nan") if math.isnan(score) else float(d.get("correct", score)))
            groups.append(str(m.get("tag", d.get("tag", "unknown"))))
        else:
            values.append(float(score))
            groups.append("")
    rows["value"], rows["group"] = values, groups
    rows["benchmark_version"] = samples["benchmark_version"].astype(str)
    rows["model_config_hash"] = samples["model_config_hash"].astype(str)
    return rows.loc[:, list(VALUE_COLUMNS)].reset_index(drop=True)


def rows_for(values: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str] | None:
    """The rows behind one summary metric and how it aggregates (``None`` if none are)."""
    plain = values[(values["metric"] == metric) & (values["aggregate"] != "geneval")]
    if len(plain):
        return plain, "mean"
    gen = values[values["aggregate"] == "geneval"]
    if metric == "overall" and len(gen):
        return gen, "task-mean"
    task = gen[gen["group"] == metric]
    return (task, "mean") if len(task) else None


def metric_value(values: pd.DataFrame | None, metric: str) -> float:
    """One run's summary metric from its value table, on whatever cases it holds (a subset of a
    suite: e.g. its unseen cases): the mean, or for GenEval ``overall`` the unweighted mean of the
    tasks present. NaN when no value is there."""
    rows = None if values is None else rows_for(values, metric)
    if rows is None:
        return float("nan")
    r, how = rows
    if how == "task-mean":
        per_task = r.groupby("group")["value"].mean()
        return float(per_task.mean()) if len(per_task) else float("nan")
    return float(r["value"].mean())
