"""Per-sample scores -> metrics with mean, std, n and a 95% confidence interval.

Confidence intervals are **t-based**: ``mean +- t(0.975, n-1) * std / sqrt(n)`` with the sample
standard deviation (ddof=1). They are deterministic (no resampling), so the same samples always
give byte-identical result files, whichever number of processes produced them. For 0/1
accuracies this is the usual normal-approximation interval.

GenEval ``overall`` is the unweighted mean of the task accuracies (the official
``summary_scores.py`` rule, not the image-level mean). Its interval combines the tasks' sampling
variances, ``Var = sum_t s_t^2 / n_t / T^2``, with Welch-Satterthwaite degrees of freedom; its
``std`` column is the spread of the task accuracies across tasks; its ``n`` is the number of
scored images. NaN scores (rewards that could not score an image) are left out of every
statistic; ``n`` counts only scored images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tdm_r1.eval.benchmark import GENEVAL_TASKS

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float


def _t_quantile(df: float) -> float:
    """Student t quantile at ``0.5 + CONFIDENCE / 2`` (``scipy.special``: a lighter import than
    ``scipy.stats``)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + CONFIDENCE / 2))


def mean_ci(values: Sequence[float] | np.ndarray) -> Stats:
    """Mean, sample std, count and t-based 95% CI of the finite values (NaNs are skipped)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        return Stats(nan, nan, 0, nan, nan)
    mean = float(x.mean())
    if n == 1:
        return Stats(mean, nan, 1, nan, nan)
    std = float(x.std(ddof=1))
    half = _t_quantile(n - 1) * std / math.sqrt(n) if std > 0 else 0.0
    return Stats(mean, std, n, mean - half, mean + half)


def task_order(tags: Sequence[str]) -> list[str]:
    """GenEval's six tasks in paper order, then any other tag found (sorted)."""
    present = set(tags)
    return [t for t in GENEVAL_TASKS if t in present] + sorted(present - set(GENEVAL_TASKS))


def geneval_stats(correct: Sequence[float] | np.ndarray, tags: Sequence[str]) -> list[tuple[str, Stats]]:
    """``[("overall", ...), (task, ...), ...]`` from per-image correctness (0/1, NaN = unscored).

    Only tasks present in ``tags`` appear (a ``--limit`` run may cover fewer than six); ``overall``
    averages the present tasks.
    """
    c = np.asarray(correct, dtype=np.float64)
    t = np.asarray(list(tags), dtype=object)
    if c.shape[0] != t.shape[0]:
        raise ValueError(f"{c.shape[0]} correctness values for {t.shape[0]} tags")
    per_task = [(name, mean_ci(c[t == name])) for name in task_order(list(t))]
    scored = [s for _, s in per_task if s.n > 0]
    nan = float("nan")
    if not scored:
        return [("overall", Stats(nan, nan, 0, nan, nan)), *per_task]
    k = len(scored)
    means = np.array([s.mean for s in scored])
    overall = float(means.mean())
    spread = float(means.std(ddof=1)) if k > 1 else nan
    n = sum(s.n for s in scored)
    if any(s.n < 2 for s in scored):
        return [("overall", Stats(overall, spread, n, nan, nan)), *per_task]
    v = np.array([s.std**2 / s.n for s in scored])  # per-task variance of the task mean
    var = float(v.sum()) / k**2
    if var == 0.0:
        ci = (overall, overall)
    else:
        dof = float(v.sum() ** 2 / np.sum(v**2 / (np.array([s.n for s in scored]) - 1)))
        half = _t_quantile(dof) * math.sqrt(var)
        ci = (overall - half, overall + half)
    return [("overall", Stats(overall, spread, n, *ci)), *per_task]
