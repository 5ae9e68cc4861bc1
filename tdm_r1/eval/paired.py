"""Paired deltas between two models measured on the same suite.

Every model in a suite sees the same prompts and seeds, so the score of model A and of model B on
one (prompt, seed) are a pair; their difference removes the prompt's own difficulty, and a paired
confidence interval is much narrower than two independent ones. The pairing key of a sample is
``(prompt_id, sample, seed)`` (the runner's work item; ``prompt_id`` is stable within a suite
version). Two runs are paired only when their suite versions, reward versions and sample sets
match; otherwise the delta says why it is not (``method = "unpaired"``, NaN interval).

Methods (both 95%):

- ``paired-t`` for metrics that are a plain mean of per-sample values: mean of the per-sample
  differences +- ``t(0.975, n-1) * sd / sqrt(n)`` (deterministic).
- ``paired-bootstrap`` for GenEval ``overall``, the unweighted mean of the task accuracies: the
  prompts of each task are resampled with replacement (all images of a drawn prompt come along,
  for both models), both models' task accuracies and their mean are recomputed on the same
  resample, and the interval is the 2.5-97.5 percentile of the resampled differences.
  ``BOOTSTRAP_RESAMPLES`` draws from ``numpy.random.default_rng(BOOTSTRAP_SEED)``: reruns give
  identical numbers.

Samples that either model could not score (NaN) leave the pair out; ``n`` counts scored pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tdm_r1.eval.aggregate import mean_ci, task_order
from tdm_r1.eval.results import file_stem, read_meta, read_values
from tdm_r1.eval.values import KEY, rows_for

PAIRED_T = "paired-t"
PAIRED_BOOTSTRAP = "paired-bootstrap"
UNPAIRED = "unpaired"
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Delta:
    """Model minus reference on one metric, with its 95% CI (NaN when unpaired)."""

    delta: float
    ci_low: float
    ci_high: float
    n: int
    method: str
    reason: str = ""

    @property
    def significant(self) -> bool | None:
        """``True`` when the CI excludes 0, ``False`` when it includes 0, ``None`` without a CI."""
        if math.isnan(self.ci_low) or math.isnan(self.ci_high):
            return None
        return self.ci_low > 0 or self.ci_high < 0


def unpaired(delta: float, reason: str) -> Delta:
    """A delta that could not be paired (no CI): the plain difference of means and the reason."""
    nan = float("nan")
    return Delta(delta, nan, nan, 0, UNPAIRED, reason)


def _finite_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ~(np.isnan(a) | np.isnan(b))


def paired_t(a: np.ndarray, b: np.ndarray) -> Delta:
    """Paired t-interval of ``mean(a - b)`` over the pairs both scored (``a[i]``, ``b[i]`` pair)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    keep = _finite_pairs(a, b)
    s = mean_ci(a[keep] - b[keep])
    if s.n < 2:
        return Delta(s.mean, s.ci_low, s.ci_high, s.n, PAIRED_T, f"only {s.n} scored pair(s)")
    return Delta(s.mean, s.ci_low, s.ci_high, s.n, PAIRED_T)


def paired_bootstrap_task_mean(
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray,
    clusters: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Delta:
    """Paired bootstrap CI of ``mean_g acc_g(a) - mean_g acc_g(b)`` (the GenEval ``overall``).

    Args:
        a, b: per-sample values of the two models, aligned (``a[i]`` and ``b[i]`` are a pair).
        groups: the task of each sample; the aggregate is the unweighted mean of task means.
        clusters: the resampling unit of each sample (its prompt id); resampled within task.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    groups, clusters = np.asarray(groups, dtype=object), np.asarray(clusters, dtype=object)
    keep = _finite_pairs(a, b)
    d, groups, clusters = (a - b)[keep], groups[keep], clusters[keep]
    n = int(d.size)
    nan = float("nan")
    if n == 0:
        return Delta(nan, nan, nan, 0, PAIRED_BOOTSTRAP, "no scored pairs")
    rng = np.random.default_rng(seed)
    observed, boot = 0.0, np.zeros(resamples)
    tasks = task_order(list(groups))
    for task in tasks:
        in_task = groups == task
        names, inverse = np.unique(clusters[in_task].astype(str), return_inverse=True)
        sums = np.bincount(inverse, weights=d[in_task], minlength=len(names))  # (P,)
        counts = np.bincount(inverse, minlength=len(names)).astype(np.float64)  # (P,)
        observed += sums.sum() / counts.sum()
        idx = rng.integers(0, len(names), size=(resamples, len(names)))  # (R, P) prompts drawn
        boot += sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    observed /= len(tasks)
    boot /= len(tasks)
    low, high = np.quantile(boot, [0.025, 0.975])
    return Delta(float(observed), float(low), float(high), n, PAIRED_BOOTSTRAP)


def compare(model: pd.DataFrame, reference: pd.DataFrame, metric: str) -> Delta:
    """Paired delta ``model - reference`` on one summary metric of one suite, from both runs'
    value tables (:func:`sample_values`); unpaired with a reason when they do not match."""
    nan = float("nan")
    m_rows, r_rows = rows_for(model, metric), rows_for(reference, metric)
    if m_rows is None or r_rows is None:
        return unpaired(nan, f"no per-sample values for metric {metric!r}")
    (m, how), (r, _) = m_rows, r_rows
    for col, what in (("benchmark_version", "suite versions"), ("reward_version", "reward versions")):
        mv, rv = sorted(set(m[col].astype(str))), sorted(set(r[col].astype(str)))
        if mv != rv:
            return unpaired(nan, f"{what} differ ({'|'.join(mv)} vs {'|'.join(rv)})")
    key = [*KEY, "metric"]
    for side, rows in (("model", m), ("reference", r)):
        if rows.duplicated(key).any():
            return unpaired(nan, f"the {side}'s per-sample table repeats a sample key")
    joined = m.merge(r, on=key, how="outer", suffixes=("_m", "_r"), indicator=True)
    only = joined["_merge"] != "both"
    if only.any():
        n_m, n_r = int((joined["_merge"] == "left_only").sum()), int((joined["_merge"] == "right_only").sum())
        return unpaired(
            nan, f"sample sets differ ({n_m} samples only in the model's run, {n_r} only in the reference's)"
        )
    a, b = joined["value_m"].to_numpy(), joined["value_r"].to_numpy()
    if how == "task-mean":
        return paired_bootstrap_task_mean(a, b, joined["group_m"].to_numpy(), joined["prompt_id"].to_numpy())
    return paired_t(a, b)


def run_delta(
    bench: str,
    metric: str,
    model: str,
    ref: str,
    summaries: dict[tuple[str, str, str], Any],
    values: dict[tuple[str, str], pd.DataFrame | None],
    root: Path,
) -> Delta:
    """``model - ref`` on ``bench/metric``: paired from the per-sample files when the two runs
    match; else the difference of the summary means with the reason it is unpaired, or NaN when
    the two runs did not measure the same samples (other suite version, a ``--limit`` run)."""
    nan = float("nan")
    sm, sr = summaries[(model, bench, metric)], summaries[(ref, bench, metric)]
    if str(sm.benchmark_version) != str(sr.benchmark_version):
        return unpaired(nan, f"suite versions differ ({sm.benchmark_version} vs {sr.benchmark_version})")
    limits = [read_meta(bench, name, root).get("limit") for name in (model, ref)]
    if limits[0] != limits[1]:
        return unpaired(nan, f"sample sets differ (--limit {limits[0]} vs {limits[1]})")
    diff = float(sm.mean) - float(sr.mean)
    for name, summary in ((model, sm), (ref, sr)):
        if (bench, name) not in values:
            values[(bench, name)] = read_values(bench, name, root)
        v = values[(bench, name)]
        if v is None:
            return unpaired(diff, f"no per-sample file for {name} ({bench}/{file_stem(name)}.scores.csv)")
        if set(v["model_config_hash"]) != {str(summary.model_config_hash)} or set(v["benchmark_version"]) != {
            str(summary.benchmark_version)
        }:
            return unpaired(
                diff, f"the per-sample file of {name} on {bench} is from another run than its summary"
            )
    return compare(values[(bench, model)], values[(bench, ref)], metric)  # type: ignore[arg-type]


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "Delta",
    "compare",
    "paired_bootstrap_task_mean",
    "paired_t",
    "run_delta",
]
