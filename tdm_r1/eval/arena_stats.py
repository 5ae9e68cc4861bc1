"""The arena's numbers pooled over training seeds: gains, head-to-head differences, the verdict.

Rows of ``results/arena/<reward>.csv`` are one (method, start model, seed, checkpoint) each, with
the paired gain of that checkpoint over its start model on the same prompts and seeds
(:mod:`tdm_r1.eval.paired`). Pooled over the seeds of a cell:

- **gain**: the mean of the per-seed gains, with a 95% t-interval over the seeds
  (``mean +- t(0.975, n-1) * s``). The seed is the unit: each seed's gain already averages over
  all evaluation prompts, and the spread of the seed gains holds both the between-seed variance
  of training and the prompt noise of each evaluation; with ``n`` seeds the interval has ``n - 1``
  degrees of freedom (3 seeds: t = 4.30), which is what an honest claim about a training method
  costs. ``s`` is the standard error over seeds, ``sd / sqrt(n)``, floored at the prompt noise the
  seeds' gains carry, ``sqrt(mean(se_i^2) / n)`` with ``se_i`` the standard error of seed i's own
  paired delta (its 95% CI's half-width / 1.96): a few seeds can agree by chance (discrete
  metrics: two seeds of 192 binary images gave the same gain to the last digit), and a spread of
  0 between them is no evidence that the prompt noise is 0.
- **head to head** (A minus B, both from the same start at the same NFE): per seed, gain A minus
  gain B (the start cancels: the mean over the same prompts of A's score minus B's), then the same
  t-interval over the seeds both have (seed ``s`` of both methods saw the same training prompts and
  initial noises: a paired design); the floor uses ``se_A^2 + se_B^2`` per seed (conservative: the
  shared prompts make the two deltas positively correlated).
- **verdict**: a difference whose CI excludes 0 is a win; otherwise "not separable".

Rows of the version-1 arena (one seed, no checkpoints) read as seed 0 at the last epoch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tdm_r1.eval.aggregate import _t_quantile, mean_ci

#: The gain a method must reach for "reward evaluations to reach +0.05".
REACH = 0.05


@dataclass(frozen=True)
class Pooled:
    """A quantity over training seeds: mean, 95% t-interval over seeds (NaN for fewer than 2)."""

    mean: float
    ci_low: float
    ci_high: float
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]

    @property
    def significant(self) -> bool | None:
        """Whether the 95% interval excludes 0 (None when there is no interval, e.g. one seed)."""
        if math.isnan(self.ci_low) or math.isnan(self.ci_high):
            return None
        return self.ci_low > 0 or self.ci_high < 0


def pool(values: dict[int, float], ses: dict[int, float] | None = None) -> Pooled:
    """seed -> value, pooled (NaN values are left out); ``ses``: seed -> the standard error of that
    seed's value over prompts, the floor of the interval (module docstring)."""
    keep = {s: v for s, v in sorted(values.items()) if not math.isnan(v)}
    st = mean_ci(np.array(list(keep.values()), dtype=np.float64))
    n = len(keep)
    if n < 2 or not ses:
        return Pooled(st.mean, st.ci_low, st.ci_high, tuple(keep), tuple(keep.values()))
    floor2 = [ses[s] ** 2 for s in keep if s in ses and not math.isnan(ses[s])]
    se = max(st.std / math.sqrt(n), math.sqrt(sum(floor2) / len(floor2) / n) if floor2 else 0.0)
    half = _t_quantile(n - 1) * se
    return Pooled(st.mean, st.mean - half, st.mean + half, tuple(keep), tuple(keep.values()))


def normalised(table: pd.DataFrame) -> pd.DataFrame:
    """The ok rows with integer ``seed`` and ``epoch`` (version-1 rows: seed 0, the last epoch)."""
    ok = table[table["status"] == "ok"].copy()
    ok["seed"] = pd.to_numeric(ok["seed"], errors="coerce").fillna(0).astype(int)
    epoch = pd.to_numeric(ok["epoch"], errors="coerce")
    ok["epoch"] = epoch.fillna(pd.to_numeric(ok["epochs"], errors="coerce")).fillna(0).astype(int)
    ok["final"] = ok["epoch"] == pd.to_numeric(ok["epochs"], errors="coerce").fillna(0).astype(int)
    return ok


def cells(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, model) of the ok rows, in the table's order."""
    ok = normalised(table)
    return list(dict.fromkeys(zip(ok["method"], ok["model"], strict=True)))


def seed_values(
    table: pd.DataFrame, method: str, model: str, column: str, *, final: bool = True
) -> pd.DataFrame:
    """seed x reward_evals -> ``column`` for one cell (``final``: the last checkpoint only)."""
    ok = normalised(table)
    rows = ok[(ok["method"] == method) & (ok["model"] == model)]
    if final:
        rows = rows[rows["final"]]
    return rows.pivot_table(index="seed", columns="reward_evals", values=column, aggfunc="last")


def _ses(table: pd.DataFrame, method: str, model: str, column: str, *, final: bool = True) -> pd.DataFrame:
    """seed x reward_evals -> the standard error of ``column`` (a ``*_delta``) from its row's CI."""
    pre = column.removesuffix("delta")
    lo = seed_values(table, method, model, f"{pre}ci_low", final=final)
    hi = seed_values(table, method, model, f"{pre}ci_high", final=final)
    return (hi - lo) / (2 * 1.959963984540054)


def gain(table: pd.DataFrame, method: str, model: str, column: str = "in_delta") -> Pooled:
    """The cell's gain at the full budget, pooled over its seeds."""
    v = seed_values(table, method, model, column)
    if v.empty:
        return pool({})
    se = _ses(table, method, model, column)
    ses = {int(s): float(x) for s, x in se.iloc[:, -1].items()} if not se.empty else None
    return pool({int(s): float(x) for s, x in v.iloc[:, -1].items()}, ses)


def budget_curve(table: pd.DataFrame, method: str, model: str, column: str = "in_delta") -> dict[int, Pooled]:
    """reward evaluations -> the cell's pooled gain at that checkpoint."""
    v = seed_values(table, method, model, column, final=False)
    se = _ses(table, method, model, column, final=False)
    return {
        int(b): pool(
            {int(s): float(x) for s, x in v[b].items()},
            {int(s): float(x) for s, x in se[b].items()} if b in se else None,
        )
        for b in v.columns
    }


def evals_to_reach(table: pd.DataFrame, method: str, model: str, threshold: float = REACH) -> int | None:
    """The first checkpoint (reward evaluations) whose seed-mean in-domain gain reaches ``threshold``."""
    for evals, p in sorted(budget_curve(table, method, model).items()):
        if not math.isnan(p.mean) and p.mean >= threshold:
            return evals
    return None


def _nfe(table: pd.DataFrame, method: str, model: str) -> float:
    ok = normalised(table)
    nfe = ok[(ok["method"] == method) & (ok["model"] == model)]["nfe"]
    return float(nfe.iloc[0]) if len(nfe) else math.nan


def head_to_head(table: pd.DataFrame, column: str = "in_delta") -> list[tuple[str, str, str, Pooled]]:
    """(model, method A, method B, A minus B over common seeds) for every pair of methods that start
    from the same model and sample at the same NFE, at the full budget."""
    out = []
    for (ma, sa), (mb, sb) in itertools.combinations(cells(table), 2):
        if sa != sb or _nfe(table, ma, sa) != _nfe(table, mb, sb):
            continue
        a, b = seed_values(table, ma, sa, column), seed_values(table, mb, sb, column)
        if a.empty or b.empty:
            continue
        ga, gb = a.iloc[:, -1], b.iloc[:, -1]
        common = sorted(set(ga.index) & set(gb.index))
        sa_, sb_ = _ses(table, ma, sa, column), _ses(table, mb, sb, column)
        ses = None
        if not sa_.empty and not sb_.empty:
            ea, eb = sa_.iloc[:, -1], sb_.iloc[:, -1]
            ses = {int(s): math.hypot(float(ea[s]), float(eb[s])) for s in common}
        out.append((sa, ma, mb, pool({int(s): float(ga[s] - gb[s]) for s in common}, ses)))
    return out


def pair_verdict(a: str, b: str, d: Pooled) -> str:
    """``a better`` / ``b better`` when the CI of a - b excludes 0, else ``not separable``."""
    if d.significant is None:
        return "no CI (fewer than 2 seeds)"
    if not d.significant:
        return "not separable"
    return f"**{a} better**" if d.mean > 0 else f"**{b} better**"


def ranking(table: pd.DataFrame, model: str) -> list[tuple[str, Pooled]]:
    """The methods from ``model``, by full-budget in-domain gain (highest first; NaN last)."""
    ranked = [(meth, gain(table, meth, mod)) for meth, mod in cells(table) if mod == model]
    return sorted(ranked, key=lambda x: -x[1].mean if not math.isnan(x[1].mean) else math.inf)


def margin(table: pd.DataFrame, model: str, a: str, b: str, column: str = "in_delta") -> Pooled | None:
    """``a`` minus ``b`` (both from ``model``) at the full budget, pooled over their common seeds."""
    for m, x, y, p in head_to_head(table, column):
        if m == model and (x, y) == (a, b):
            return p
        if m == model and (x, y) == (b, a):
            return flip(p)
    return None


def flip(p: Pooled) -> Pooled:
    return Pooled(-p.mean, -p.ci_high, -p.ci_low, p.seeds, tuple(-v for v in p.per_seed))
