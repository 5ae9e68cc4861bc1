"""Paired deltas: the paired t-interval, the GenEval paired bootstrap, mismatch handling and the
leaderboard's marks, on small hand-made per-sample tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tdm_r1.eval import leaderboard, leaderboard_md
from tdm_r1.eval.aggregate import geneval_stats, mean_ci
from tdm_r1.eval.paired import (
    PAIRED_BOOTSTRAP,
    PAIRED_T,
    UNPAIRED,
    compare,
    paired_bootstrap_task_mean,
    paired_t,
)
from tdm_r1.eval.results import SAMPLE_COLUMNS, SUMMARY_COLUMNS, read_values, run_files, write_run

T_975_DF4 = 2.7764451051977987  # Student t quantile 0.975 with 4 degrees of freedom (t tables: 2.776)

# Five prompts: the reference's scores vary a lot from prompt to prompt, the model is better by
# about 0.1 on every one of them.
REF = np.array([0.8, 0.65, 0.65, 0.5, 0.9])
DIFF = np.array([0.1, 0.05, 0.15, 0.1, 0.1])
MODEL = REF + DIFF


def test_paired_t_matches_a_hand_computed_interval_where_independent_cis_overlap() -> None:
    d = paired_t(MODEL, REF)
    # by hand: mean 0.1; deviations 0, -0.05, 0.05, 0, 0 -> s^2 = 0.005 / 4; se = s / sqrt(5)
    half = T_975_DF4 * math.sqrt(0.005 / 4) / math.sqrt(5)
    assert d.method == PAIRED_T and d.n == 5
    assert d.delta == pytest.approx(0.1, abs=1e-12)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.1 - half, 0.1 + half), abs=1e-12)
    assert d.ci_low == pytest.approx(0.056101, abs=1e-6) and d.significant is True
    a, b = mean_ci(MODEL), mean_ci(REF)  # the independent intervals overlap widely
    assert a.ci_low < b.ci_high and b.ci_high - a.ci_low > 0.1


def test_paired_t_skips_pairs_either_side_could_not_score_and_says_not_significant() -> None:
    model = np.array([1.0, 0.0, np.nan, 1.0, 0.0, 1.0])
    ref = np.array([0.0, 1.0, 1.0, np.nan, 0.0, 1.0])
    d = paired_t(model, ref)
    assert d.n == 4 and d.delta == 0.0  # diffs +1, -1, 0, 0
    assert d.ci_low < 0 < d.ci_high and d.significant is False
    with pytest.raises(ValueError, match="differ in shape"):
        paired_t(model, ref[:3])


def _geneval_case(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two tasks of unequal size, 2 images per prompt; the model is better on most prompts."""
    rng = np.random.default_rng(seed)
    tags = np.array(["counting"] * 16 + ["position"] * 40)
    prompts = np.array([f"{t}-{i // 2}" for i, t in enumerate(tags)])
    ref = (rng.random(tags.size) < 0.4).astype(float)
    model = np.where(rng.random(tags.size) < 0.3, 1.0, ref)
    return model, ref, tags, prompts


def test_bootstrap_point_is_the_geneval_overall_difference() -> None:
    model, ref, tags, prompts = _geneval_case()
    d = paired_bootstrap_task_mean(model, ref, tags, prompts)
    overall = geneval_stats(model, tags)[0][1].mean - geneval_stats(ref, tags)[0][1].mean
    assert d.method == PAIRED_BOOTSTRAP and d.n == tags.size
    assert d.delta == pytest.approx(overall, abs=1e-12)
    assert d.delta != pytest.approx(model.mean() - ref.mean())  # the task mean, not the image mean
    assert d.ci_low < d.delta < d.ci_high
    assert d.ci_low > 0 and d.significant is True


def test_bootstrap_resamples_prompts_within_task() -> None:
    # one task, two prompts: per-prompt differences 0 and 1 -> resampled means 0, 0.5, 1 with
    # probabilities 1/4, 1/2, 1/4: the 2.5-97.5 percentile interval is [0, 1]
    d = paired_bootstrap_task_mean(
        np.array([0.0, 0.0, 1.0, 1.0]),
        np.array([0.0, 0.0, 0.0, 0.0]),
        np.array(["colors"] * 4),
        np.array(["p0", "p0", "p1", "p1"]),
    )
    assert (d.delta, d.ci_low, d.ci_high) == (0.5, 0.0, 1.0)
    # a second task whose prompts always differ by exactly +1 adds 1 to every resample: the
    # interval becomes [0.5, 1] (mean of the two task deltas) and excludes 0
    d2 = paired_bootstrap_task_mean(
        np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
        np.zeros(6),
        np.array(["colors"] * 4 + ["position"] * 2),
        np.array(["p0", "p0", "p1", "p1", "q0", "q1"]),
    )
    assert (d2.delta, d2.ci_low, d2.ci_high) == (0.75, 0.5, 1.0) and d2.significant is True


def test_bootstrap_agrees_with_the_t_interval_on_one_task_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    ref = rng.random(400)
    model = ref + rng.normal(0.05, 0.2, 400)
    t = paired_t(model, ref)
    b = paired_bootstrap_task_mean(model, ref, np.array(["colors"] * 400), np.arange(400))
    assert b.delta == pytest.approx(t.delta, abs=1e-12)
    assert (b.ci_low, b.ci_high) == pytest.approx((t.ci_low, t.ci_high), abs=0.005)
    # seeded: a rerun gives the same numbers, another seed slightly different ones
    again = paired_bootstrap_task_mean(model, ref, np.array(["colors"] * 400), np.arange(400))
    assert (again.ci_low, again.ci_high) == (b.ci_low, b.ci_high)
    other = paired_bootstrap_task_mean(model, ref, np.array(["colors"] * 400), np.arange(400), seed=1)
    assert other.ci_low != b.ci_low and other.ci_low == pytest.approx(b.ci_low, abs=0.003)


# ------------------------------------------------------------------ runs on disk and mismatches
def _write(
    root: Path,
    model: str,
    scores: np.ndarray,
    *,
    version: str = "1",
    reward_version: str = "1",
    prompts: int | None = None,
    relations: dict | None = None,
    limit: int | None = None,
) -> None:
    """A run of reward ``r`` on suite ``syn`` (one image per prompt) through ``write_run``."""
    n = len(scores) if prompts is None else prompts
    scores = np.asarray(scores, dtype=float)[:n]
    samples = pd.DataFrame(
        {
            "model": model,
            "benchmark": "syn",
            "benchmark_version": version,
            "prompt_id": [f"p{i:02d}" for i in range(n)],
            "prompt": [f"prompt {i}" for i in range(n)],
            "metadata": "{}",
            "sample": 0,
            "seed": [1000 + i for i in range(n)],
            "image_key": "k",
            "image_sha256": "s",
            "reward": "r",
            "reward_version": reward_version,
            "reward_options": "{}",
            "metric": "r",
            "role": "in_domain",
            "score": scores,
            "nan_reason": "",
            "details": "{}",
            "tdmbench_version": "0",
            "model_config_hash": f"h-{model}",
        },
        columns=list(SAMPLE_COLUMNS),
    )
    s = mean_ci(scores)
    summary = pd.DataFrame(
        [
            [
                model,
                "syn",
                "r",
                s.mean,
                s.std,
                s.n,
                s.ci_low,
                s.ci_high,
                4,
                "r",
                reward_version,
                version,
                "0",
                f"h-{model}",
                "images/prompt=1",
                "approximate: suite 'syn' has no published protocol",
            ]
        ],
        columns=list(SUMMARY_COLUMNS),
    )
    bench = {
        "name": "syn",
        "version": version,
        "in_domain": [{"name": "r", "metric": "r", "aggregate": "mean"}],
    }
    meta = {
        "benchmark": bench,
        "limit": limit,
        "model": {"name": model, **(relations or {})},
        "rewards": [{"name": "r", "metric": "r", "higher_is_better": True, "role": "in_domain"}],
    }
    write_run(run_files("syn", model, root), summary, samples, meta)


def _values(root: Path, model: str) -> pd.DataFrame:
    v = read_values("syn", model, root)
    assert v is not None
    return v


def test_the_committed_scores_file_round_trips_and_pairs_by_sample_key(tmp_path: Path) -> None:
    _write(tmp_path, "ref", REF)
    _write(tmp_path, "m", MODEL)
    v = _values(tmp_path, "m")
    assert list(v["value"]) == list(MODEL) and set(v["model_config_hash"]) == {"h-m"}
    d = compare(v.iloc[::-1], _values(tmp_path, "ref"), "r")  # pairing is by sample key, not row
    assert d.delta == pytest.approx(0.1, abs=1e-12) and d.significant is True
    shifted = v.assign(seed=v["seed"] + 1)  # the same prompts drawn with other seeds: not pairs
    assert compare(shifted, _values(tmp_path, "ref"), "r").reason.startswith("sample sets differ (5 samples")
    # the parquet alone (results written before the scores file existed) gives the same values
    run_files("syn", "m", tmp_path).scores.unlink()
    pd.testing.assert_frame_equal(_values(tmp_path, "m"), v)


def test_runs_that_do_not_match_are_reported_unpaired_with_the_reason(tmp_path: Path) -> None:
    _write(tmp_path, "ref", REF)
    ref = _values(tmp_path, "ref")
    cases = {
        "fewer": (dict(prompts=4), "sample sets differ (0 samples only in the model's run, 1 only"),
        "v2": (dict(version="2"), "suite versions differ (2 vs 1)"),
        "rv2": (dict(reward_version="2"), "reward versions differ (2 vs 1)"),
    }
    for name, (kw, reason) in cases.items():
        _write(tmp_path, name, MODEL, **kw)
        d = compare(_values(tmp_path, name), ref, "r")
        assert d.method == UNPAIRED and math.isnan(d.delta) and math.isnan(d.ci_low), name
        assert d.reason.startswith(reason) and d.significant is None, name
    assert compare(ref, ref, "missing").reason == "no per-sample values for metric 'missing'"


def _leaderboard(root: Path) -> leaderboard.Leaderboard:
    return leaderboard.build(root, published=root / "none.csv")


def test_leaderboard_marks_significant_and_not_significant_deltas(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, REF.size)
    _write(tmp_path, "base", REF)
    _write(tmp_path, "teacher", REF + noise, relations={})
    _write(tmp_path, "rl", MODEL, relations={"few_step_base": "base", "baseline": "teacher"})
    lb = _leaderboard(tmp_path)
    d = lb.deltas.set_index("reference")
    assert list(lb.deltas.columns) == list(leaderboard.DELTA_COLUMNS)
    assert d.loc["base", "method"] == PAIRED_T and bool(d.loc["base", "significant"]) is True
    assert d.loc["base", "delta"] == pytest.approx(MODEL.mean() - REF.mean(), abs=1e-12)
    md = leaderboard_md.to_markdown(lb)
    line = next(x for x in md.splitlines() if x.startswith("| rl | base |"))
    assert "| paired-t | **significantly better** |" in line and "[+0.056, +0.144]" in line

    _write(tmp_path, "rl", REF + noise[::-1], relations={"few_step_base": "base"})
    md = leaderboard_md.to_markdown(_leaderboard(tmp_path))
    line = next(x for x in md.splitlines() if x.startswith("| rl | base |"))
    assert line.endswith("| paired-t | not significant |")

    leaderboard_md.write(_leaderboard(tmp_path), tmp_path)
    csv = pd.read_csv(tmp_path / "leaderboard_deltas.csv")
    assert list(csv.columns) == list(leaderboard.DELTA_COLUMNS) and csv["significant"].tolist() == [False]


def test_leaderboard_says_why_a_delta_is_unpaired(tmp_path: Path) -> None:
    rel = {"few_step_base": "base", "baseline": "teacher"}
    _write(tmp_path, "base", REF)
    _write(tmp_path, "teacher", REF, limit=3, prompts=3)
    _write(tmp_path, "rl", MODEL, relations=rel)
    run_files("syn", "base", tmp_path).scores.unlink()
    run_files("syn", "base", tmp_path).samples.unlink()
    d = _leaderboard(tmp_path).deltas.set_index("reference")
    # no per-sample file: the difference of the means stands, without a CI
    assert d.loc["base", "method"] == UNPAIRED and d.loc["base", "delta"] == pytest.approx(0.1)
    assert d.loc["base", "reason"] == "no per-sample file for base (syn/base.scores.csv)"
    assert pd.isna(d.loc["base", "significant"]) and math.isnan(d.loc["base", "ci_low"])
    # a --limit run against a full run: not the same samples, so no number at all
    assert math.isnan(d.loc["teacher", "delta"])
    assert d.loc["teacher", "reason"] == "sample sets differ (--limit None vs 3)"
    md = leaderboard_md.to_markdown(_leaderboard(tmp_path))
    assert "| unpaired | unpaired: no per-sample file for base (syn/base.scores.csv) |" in md
    # a stale per-sample file (another run than the summary) is not used either
    _write(tmp_path, "base", REF)
    meta = json.loads(run_files("syn", "base", tmp_path).meta.read_text())
    scores = run_files("syn", "base", tmp_path).scores
    scores.write_text(scores.read_text().replace("h-base", "h-old"))
    assert meta["model"]["name"] == "base"
    d = _leaderboard(tmp_path).deltas.set_index("reference")
    assert (
        d.loc["base", "reason"] == "the per-sample file of base on syn is from another run than its summary"
    )


def test_a_config_hash_that_looks_like_a_number_stays_text(tmp_path) -> None:
    """'19937156014e2477' is a hex digest, not 1.99e2487: read as a float it never matches its samples."""
    from tdm_r1.eval.results import SUMMARY_COLUMNS, read_summaries

    folder = tmp_path / "bench"
    folder.mkdir()
    row = {c: "1" for c in SUMMARY_COLUMNS} | {"model_config_hash": "19937156014e2477", "model": "m"}
    (folder / "m.csv").write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    assert read_summaries(tmp_path)["model_config_hash"].tolist() == ["19937156014e2477"]
