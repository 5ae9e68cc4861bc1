"""TDM-R1's instruments (``method.diagnostics_every``): the ranking and gradient math by hand, the
held-out reader, the curves, and that turning them on changes no training number."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tdm_r1.testing import trainkit
from tdm_r1.train.diagnostic_stats import (
    average_ranks,
    direction_stats,
    paired_group_delta,
    pairwise_accuracy,
    spearman,
    term_gradients,
)
from tdm_r1.train.diagnostics import heldout_metrics

ROOT = Path(__file__).resolve().parents[2]
t = torch.tensor


# ------------------------------------------------------------------------------------ ranking
def test_pairwise_accuracy_by_hand_with_ties() -> None:
    g2 = t([0, 0, 0, 1, 1, 1])
    # group 0 ordered right (1), group 1 reversed (0): mean over groups 0.5
    assert pairwise_accuracy(t([1.0, 2, 3, 3, 2, 1]), t([1.0, 2, 3, 1, 2, 3]), g2) == 0.5
    # a tie in score counts half: pairs (0,1) 0.5, (0,2) 1, (1,2) 1 -> 2.5 / 3
    assert math.isclose(pairwise_accuracy(t([1.0, 1, 2]), t([1.0, 2, 3]), t([0, 0, 0])), 2.5 / 3)
    # pairs with equal rewards do not count: only (0,2), (1,2), both wrong
    assert pairwise_accuracy(t([3.0, 2, 1]), t([1.0, 1, 2]), t([0, 0, 0])) == 0.0
    # a group with one reward only carries no pair; it is left out of the mean
    assert pairwise_accuracy(t([1.0, 2, 5, 4]), t([1.0, 2, 7, 7]), t([0, 0, 1, 1])) == 1.0
    assert math.isnan(pairwise_accuracy(t([1.0, 2]), t([3.0, 3]), t([0, 0])))
    # unscored samples (NaN reward) are dropped
    assert pairwise_accuracy(t([1.0, 2, 0]), t([1.0, 2, float("nan")]), t([0, 0, 0])) == 1.0


def test_spearman_by_hand_with_ties() -> None:
    assert torch.equal(average_ranks(t([3.0, 1, 3, 2])), t([3.5, 1, 3.5, 2], dtype=torch.float64))
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert math.isclose(spearman(t([1.0, 2, 3, 4]), t([1.0, 3, 2, 4]), t([0, 0, 0, 0])), 0.8)
    # tied rewards: ranks (1.5, 1.5, 3) against (1, 2, 3): 1.5 / sqrt(1.5 * 2)
    assert math.isclose(spearman(t([1.0, 2, 3]), t([1.0, 1, 2]), t([0, 0, 0])), 1.5 / math.sqrt(3))
    # mean over groups; a constant group (undefined) is left out
    groups = t([0, 0, 0, 1, 1, 1, 2, 2])
    got = spearman(t([1.0, 2, 3, 3, 2, 1, 1, 2]), t([1.0, 2, 3, 1, 2, 3, 5, 5]), groups)
    assert math.isclose(got, 0.0)
    assert math.isnan(spearman(t([1.0, 1]), t([1.0, 2]), t([0, 0])))


# --------------------------------------------------------------------------------- directions
def test_direction_norms_of_a_linear_model_by_hand() -> None:
    w = torch.nn.Parameter(t([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]]))  # (2, 3)
    x = t([1.0, 2.0, -1.0])
    y = w @ x  # (2,)
    losses = {"kl": y.sum(), "cfg": 0.5 * (w**2).sum(), "rl": None}
    grads = term_gradients(losses, [w])
    assert w.grad is None  # nothing accumulated into the training gradient
    # d/dW sum(W x) = 1 x^T (norm sqrt(2) |x|); d/dW 0.5 |W|^2 = W
    g_kl, g_cfg = torch.ones(2, 1) * x, w.detach()
    assert torch.allclose(grads["kl"][0], g_kl) and torch.allclose(grads["cfg"][0], g_cfg)
    stats = direction_stats(grads)
    assert math.isclose(stats["gdir_kl"], math.sqrt(2) * float(x.norm()), rel_tol=1e-6)
    assert math.isclose(stats["gdir_cfg"], float(w.detach().norm()), rel_tol=1e-6)
    assert stats["gdir_rl"] == 0.0 and stats["gdir_rl_over_kl"] == 0.0
    assert math.isclose(stats["gdir_cfg_over_kl"], stats["gdir_cfg"] / stats["gdir_kl"])
    assert math.isclose(stats["gdir_total"], float((g_kl + g_cfg).norm()), rel_tol=1e-6)
    cos = float((g_kl * g_cfg).sum() / (g_kl.norm() * g_cfg.norm()))
    assert math.isclose(stats["gdir_cos_kl_cfg"], cos, rel_tol=1e-6)
    assert math.isnan(stats["gdir_cos_kl_rl"])  # a direction that is off has no angle
    # the graph is still there: the real backward gives the sum of both terms
    (losses["kl"] + losses["cfg"]).backward()
    assert torch.allclose(w.grad, g_kl + g_cfg)


# ---------------------------------------------------------------------------- held-out, plots
def test_heldout_metrics_read_the_evaluations_summaries(tmp_path: Path) -> None:
    (tmp_path / "results" / "toy-ocr").mkdir(parents=True)
    shutil.copy(ROOT / "results" / "toy-ocr" / "toy-4step.csv", tmp_path / "results" / "toy-ocr")
    got = heldout_metrics(tmp_path)
    assert list(got) == ["heldout_toy-ocr_ocr"] and math.isclose(
        got["heldout_toy-ocr_ocr"], 0.8372395890764892
    )
    assert heldout_metrics(None) == {}


def test_paired_group_delta_by_hand() -> None:
    now = torch.tensor([1.0, 0.5, 0.0, 1.0, float("nan"), 0.2])
    base = torch.tensor([0.0, 0.5, 0.5, 0.0, 1.0, 0.2])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    out = paired_group_delta(now, base, groups, prefix="d")
    # differences 1, 0 | -0.5, 1 | (NaN), 0 -> mean of the 5 finite = 0.3; group means 0.5, 0.25, 0
    assert math.isclose(out["d"], 0.3)
    half = 4.302652729911275 * 0.25 / math.sqrt(3)  # t(0.975, 2) * sd(0.5, 0.25, 0) / sqrt(3)
    assert math.isclose(out["d_lo"], 0.25 - half) and math.isclose(out["d_hi"], 0.25 + half)
    one = paired_group_delta(now[:2], base[:2], groups[:2], prefix="d")
    assert one["d"] == 0.5 and one["d_lo"] != one["d_lo"]  # one group: no interval


def test_curves_draw_the_instruments_even_when_sparse(tmp_path: Path) -> None:
    from tdm_r1.train.plots import plot_curves

    hist = []
    for e in range(1, 5):
        h = {"epoch": e, "reward_mean": 0.1 * e, "gen_kl": 1.0, "surrogate_group_weight_std": 0.01}
        if e % 2 == 0:  # diagnostics_every=2, an evaluation at epoch 4
            h |= {"sur_pairacc_j0": 0.6, "sur_spearman_j0": 0.2, "gdir_kl": 1.0, "gdir_rl": 0.5}
            h |= {"gdir_rl_over_kl": 0.5, "reward_step0": 0.1, "reward_step1": 0.2, "fresh_reward_mean": 0.2}
        if e == 4:
            h["heldout_toy-ocr_ocr"] = 0.8
        hist.append(h)
    out = plot_curves(hist, tmp_path / "curves.png", title="t")
    assert out is not None and out.stat().st_size > 0


# ------------------------------------------------------------------------------- the tiny run
TIMING = ("time_", "peak_mem")


def _fake_evaluate(self, tag: str, exported: Path | None = None) -> Path:
    """A scheduled evaluation's results folder without generating (the summary of a shipped run)."""
    out = self.run_dir / "eval" / tag
    (out / "results" / "toy-ocr").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "results" / "toy-ocr" / "toy-4step.csv", out / "results" / "toy-ocr")
    return out


def _fit(tmp: Path, every: int):
    from tdm_r1.train.trainer import Trainer

    cfg = trainkit.small_config(
        tmp,
        method={"diagnostics_every": every},
        checkpoint_every=0,
        max_epochs=2,
        eval_every=2,
        eval_benchmarks=["toy-ocr"],
    )
    tr = Trainer(cfg)
    tr.fit()
    rows = [json.loads(x) for x in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    weights = {r: [p.detach().clone() for p in tr.adapter.role_parameters(r)] for r in tr.adapter.roles}
    weights["ema"] = [p.clone() for p in tr.ema.shadow]
    return rows, weights, cfg.run_dir()


def test_instruments_change_no_training_number_and_land_in_the_metrics(
    registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdm_r1.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "evaluate", _fake_evaluate)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one float path for both runs
    try:
        off_rows, off_w, _ = _fit(tmp_path / "off", 0)
        on_rows, on_w, run = _fit(tmp_path / "on", 1)
    finally:
        torch.set_num_threads(threads)
    # bit-identical: every metric of the run without instruments, and every weight (EMA included)
    for off, on in zip(off_rows, on_rows, strict=True):
        for key, val in off.items():
            if not key.startswith(TIMING):
                assert on[key] == val or (val != val and on[key] != on[key]), key
    assert off_w.keys() == on_w.keys()
    for role in off_w:
        assert all(torch.equal(a, b) for a, b in zip(off_w[role], on_w[role], strict=True)), role
    # the instruments' keys, every epoch (diagnostics_every=1); the tiny model has 2 steps, of
    # which the surrogate trains on step 0 only (step 1, sigma 0.001 -> 0, is below method.min_step)
    for row in on_rows:
        new = set(row) - set(off_rows[0])
        for key in ("gdir_kl", "gdir_cfg", "gdir_rl", "gdir_total", "gdir_rl_over_kl", "fresh_reward_mean"):
            assert key in new, key
        for key in ("reward_step0", "reward_step1", "sur_pairacc_j0", "sur_spearman_j0"):
            assert key in new and row[key] == row[key], key  # logged and a number
        assert 0 <= row["sur_pairacc_j0"] <= 1 and -1 <= row["sur_spearman_j0"] <= 1
        assert 0 <= row["sur_pairacc_q_j0"] <= 1 and -1 <= row["sur_spearman_q_j0"] <= 1
        assert row["start_delta_lo"] <= row["start_delta"] <= row["start_delta_hi"]
        assert "sur_pairacc_j1" not in row
        assert row["gdir_cfg"] > 0 and row["gdir_rl"] > 0
    # epoch 1's rollout is made by the start weights themselves: the replay gives the same rewards
    assert on_rows[0]["start_delta"] == 0.0
    assert on_rows[1]["start_delta"] != 0.0  # after one update the generator samples other images
    # the last step's x0 prediction is the rollout's final sample (Euler to sigma 0), and step 0's
    # (sigma 1 -> 0.001) is nearly it: x_0 - v against x_0 - 0.999 v
    for row in on_rows:
        assert row["reward_step1"] == row["reward_mean"]
        assert math.isclose(row["reward_step0"], row["reward_mean"], abs_tol=1e-2)
    # the scheduled evaluation (eval_every=2) lands in its epoch's row, with or without instruments
    for rows in (off_rows, on_rows):
        assert "heldout_toy-ocr_ocr" not in rows[0]
        assert math.isclose(rows[1]["heldout_toy-ocr_ocr"], 0.8372395890764892)
    assert (run / "curves.png").stat().st_size > 0


def test_diagnostics_every_must_not_be_negative(tmp_path: Path) -> None:
    from tdm_r1.errors import ConfigError

    with pytest.raises(ConfigError, match="diagnostics_every"):
        trainkit.small_config(tmp_path, method={"diagnostics_every": -1})
