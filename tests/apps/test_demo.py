"""What `make demo` shows a newcomer: the start -> end paired deltas and a readable progress bar."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tdm_r1.apps.demo import start_to_end, verdict
from tdm_r1.eval.paired import Delta
from tdm_r1.train.tracking import progress_postfix

RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_the_demo_ends_with_the_paired_start_to_end_deltas(tmp_path: Path) -> None:
    """A run's results stand in for the demo's new model: the deltas are the leaderboard's paired
    deltas against toy-4step, in-domain (the trained reward's suite) first."""
    for suite in ("toy-ocr", "toy-geneval"):
        (tmp_path / suite).mkdir()
        for suffix in (".csv", ".meta.json", ".scores.csv"):
            shutil.copyfile(RESULTS / suite / f"toy-4step{suffix}", tmp_path / suite / f"toy-4step{suffix}")
            shutil.copyfile(
                RESULTS / suite / f"toy-4step-r1-ocr{suffix}", tmp_path / suite / f"demo-x{suffix}"
            )
    rows = start_to_end("demo-x", "ocr", tmp_path)
    assert [(r["domain"], r["suite"], r["metric"]) for r in rows] == [
        ("in-domain", "toy-ocr", "ocr"),
        ("out-of-domain", "toy-geneval", "overall"),
    ]
    board = pd.read_csv(RESULTS / "leaderboard_deltas.csv")
    for r in rows:
        ref = board[
            (board["model"] == "toy-4step-r1-ocr")
            & (board["reference"] == "toy-4step")
            & (board["benchmark"] == r["suite"])
            & (board["metric"] == r["metric"])
        ].iloc[0]
        assert (r["delta"], r["ci_low"], r["ci_high"], r["n"]) == pytest.approx(
            (ref["delta"], ref["ci_low"], ref["ci_high"], ref["n"])
        )
    assert rows[0]["verdict"] == "better (CI above 0)" and rows[0]["ci_low"] > 0
    assert rows[1]["verdict"].startswith("not significant")


def test_verdicts_follow_the_ci() -> None:
    assert verdict(Delta(0.05, 0.01, 0.09, 10, "paired-t")) == "better (CI above 0)"
    assert verdict(Delta(-0.05, -0.09, -0.01, 10, "paired-t")) == "worse (CI below 0)"
    assert verdict(Delta(0.05, -0.01, 0.09, 10, "paired-t")).startswith("not significant")
    assert verdict(Delta(math.nan, math.nan, math.nan, 0, "unpaired", "suite versions differ")).endswith(
        "suite versions differ"
    )


def test_the_progress_bar_shows_a_running_mean_beside_the_epoch_reward() -> None:
    history = [{"reward_mean": r, "gen_loss": 0.5} for r in (0.849, 0.823, 0.771, 0.760, 0.708)]
    assert progress_postfix(history) == {"reward": "0.708", "mean5": "0.782", "gen_loss": "0.5"}
    history += [{"reward_mean": 0.9}] * 10
    assert progress_postfix(history)["mean10"] == "0.900"  # the last 10 epochs
    assert progress_postfix([{"reward_mean": float("nan")}]) == {"reward": "nan"}
