"""The arena's numbers pooled over seeds: t-intervals over seeds, head-to-head pairs, the budget curve."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tdm_r1.eval import arena_stats as st
from tdm_r1.eval.arena_table import COLUMNS, summary_line
from tdm_r1.eval.values import metric_value
from tdm_r1.testing.arena import arena_rows

T_975_2 = 4.302652729911275  # t(0.975, 2 degrees of freedom)
#: Each row of ``arena_rows`` has a paired CI of +-0.05: the standard error of one seed's gain.
SE = 0.05 / 1.959963984540054


def _table(*cells: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c, math.nan) for c in COLUMNS} for rows in cells for r in rows])


def test_a_gain_is_the_mean_over_seeds_with_a_t_interval_over_the_seeds() -> None:
    table = _table(arena_rows("tdm-r1", [0.0, 0.05, 0.01]))
    g = st.gain(table, "tdm-r1", "toy-4step")
    sd = math.sqrt((0.02**2 + 0.03**2 + 0.01**2) / 2)
    assert g.mean == pytest.approx(0.02) and g.seeds == (0, 1, 2)
    assert g.per_seed == pytest.approx((0.0, 0.05, 0.01))
    assert sd / math.sqrt(3) > SE / math.sqrt(3)  # the seeds' spread is above the prompt-noise floor
    assert (g.ci_low, g.ci_high) == pytest.approx(
        (0.02 - T_975_2 * sd / math.sqrt(3), 0.02 + T_975_2 * sd / math.sqrt(3))
    )
    assert g.significant is False  # each seed's own paired CI excludes 0 for none, and the seeds disagree
    assert st.gain(table, "tdm-r1", "toy-4step", "in_unseen_delta").mean == pytest.approx(0.0)
    one = st.gain(_table(arena_rows("dgpo", [0.2])), "dgpo", "toy-4step")
    assert one.mean == pytest.approx(0.2) and math.isnan(one.ci_low) and one.significant is None


def test_head_to_head_pairs_seeds_and_only_methods_with_the_same_start_and_nfe() -> None:
    a, b = arena_rows("dgpo", [0.10, 0.12, 0.14]), arena_rows("tdm-r1", [0.0, 0.05, 0.01])
    teacher = [dict(r, nfe=100) for r in arena_rows("flow-grpo", [0.3, 0.3], model="toy-teacher")]
    other_nfe = [dict(r, nfe=50) for r in arena_rows("diffusionnft", [0.3, 0.3], model="toy-teacher")]
    table = _table(a, b, teacher, other_nfe)
    pairs = st.head_to_head(table)
    assert [(m, x, y) for m, x, y, _ in pairs] == [("toy-4step", "dgpo", "tdm-r1")]
    d = pairs[0][3]
    # per seed: 0.10 - 0.00, 0.12 - 0.05, 0.14 - 0.01 -> mean 0.10, sd 0.03
    assert d.per_seed == pytest.approx((0.10, 0.07, 0.13)) and d.mean == pytest.approx(0.10)
    # floor: each seed's difference has se sqrt(SE^2 + SE^2), above the seeds' 0.03 / sqrt 3
    floor = math.hypot(SE, SE) / math.sqrt(3)
    assert floor > 0.03 / math.sqrt(3) and d.ci_low == pytest.approx(0.10 - T_975_2 * floor)
    assert st.pair_verdict("dgpo", "tdm-r1", d) == "**dgpo better**"
    assert st.margin(table, "toy-4step", "tdm-r1", "dgpo").mean == pytest.approx(-0.10)
    # seeds only one method has are left out of the pair
    partial = _table(a, arena_rows("tdm-r1", [0.0, 0.05]))
    assert st.head_to_head(partial)[0][3].seeds == (0, 1)


def test_the_summary_names_the_best_method_or_says_none_is_separable() -> None:
    clear = _table(arena_rows("dgpo", [0.10, 0.12, 0.14]), arena_rows("tdm-r1", [0.0, 0.05, 0.01]))
    assert summary_line(clear, "ocr").startswith("From toy-4step, **dgpo** is best on toy ocr")
    close = _table(arena_rows("dgpo", [0.10, 0.0, 0.05]), arena_rows("tdm-r1", [0.0, 0.05, 0.06]))
    line = summary_line(close, "ocr")
    assert "**no method is separable**" in line and "dgpo (+0.050)" in line and "over tdm-r1" in line


def test_the_budget_curve_and_reward_evaluations_to_reach_the_threshold() -> None:
    table = _table(arena_rows("dgpo", [0.10, 0.12, 0.14]), arena_rows("tdm-r1", [0.0, 0.05, 0.01]))
    curve = st.budget_curve(table, "dgpo", "toy-4step")
    assert sorted(curve) == [64, 128]
    assert curve[64].mean == pytest.approx(0.06) and curve[128].mean == pytest.approx(0.12)
    assert st.evals_to_reach(table, "dgpo", "toy-4step") == 64  # +0.06 at a half of the budget
    assert st.evals_to_reach(table, "tdm-r1", "toy-4step") is None  # +0.02 at the end


def test_version_1_rows_read_as_one_seed_at_the_last_epoch() -> None:
    v1 = [dict(r, seed=math.nan, epoch=math.nan) for r in arena_rows("dgpo", [0.1]) if r["epoch"] == 2]
    ok = st.normalised(_table(v1))
    assert list(ok["seed"]) == [0] and list(ok["epoch"]) == [2] and bool(ok["final"].iloc[0])
    assert st.gain(_table(v1), "dgpo", "toy-4step").mean == pytest.approx(0.1)


def test_a_metric_on_a_subset_of_cases_is_its_mean_or_its_task_mean() -> None:
    plain = pd.DataFrame({"metric": "ocr", "aggregate": "mean", "group": "", "value": [1.0, 0.0, 0.5]})
    assert metric_value(plain, "ocr") == pytest.approx(0.5)
    gen = pd.DataFrame(
        {
            "metric": "geneval",
            "aggregate": "geneval",
            "group": ["a", "a", "a", "b"],
            "value": [1.0, 1.0, 0.0, 0.0],
        }
    )
    assert metric_value(gen, "overall") == pytest.approx((2 / 3 + 0.0) / 2)  # tasks weigh the same
    assert math.isnan(metric_value(None, "ocr")) and math.isnan(metric_value(plain, "clip"))


def test_seeds_that_agree_by_chance_do_not_make_a_zero_width_interval() -> None:
    """Two seeds with the same gain (discrete metrics do that) have a spread of 0: the interval is then
    the prompt noise each seed's gain carries, t(0.975, 1) x SE / sqrt 2, not a point."""
    g = st.gain(_table(arena_rows("dgpo", [0.05, 0.05])), "dgpo", "toy-4step")
    half = 12.706204736174707 * SE / math.sqrt(2)  # t(0.975, 1 degree of freedom)
    assert (g.ci_low, g.ci_high) == pytest.approx((0.05 - half, 0.05 + half))
    assert g.significant is False
    without_floor = st.pool({0: 0.05, 1: 0.05})
    assert without_floor.ci_low == without_floor.ci_high == pytest.approx(0.05)  # what the floor prevents
