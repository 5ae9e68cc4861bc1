"""Every committed result carries the identity today's code computes for it.

``results/<suite>/<model>.*`` stands for an evaluation of a registered model: its ``meta.json``,
summary and per-sample file must carry the model's image identity as computed now, the suite's
definition and the rewards' versions (``tdm_r1.eval.reuse.reusable_result``, which is also what
lets ``make demo`` reuse them). When a change re-identifies a model, this test fails until the
same commit re-stamps the results (``python scripts/reproduce.py --restamp``: re-evaluated, and
replaced only when every per-sample value is the same) or re-runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tdm_r1.eval.reuse import reusable_result
from tdm_r1.registry import BENCHMARKS, MODELS

RESULTS = Path(__file__).resolve().parents[2] / "results"
COMMITTED = sorted(
    (meta.parent.name, meta.name.removesuffix(".meta.json"))
    for meta in RESULTS.glob("*/*.meta.json")
    if meta.parent.name in BENCHMARKS
)


def test_the_committed_results_are_found() -> None:
    suites = {s for s, _ in COMMITTED}
    assert {"toy-geneval", "toy-ocr"} <= suites and len(COMMITTED) >= 2 * 9


@pytest.mark.parametrize(("suite", "model"), COMMITTED, ids=[f"{s}/{m}" for s, m in COMMITTED])
def test_a_committed_result_matches_todays_identity(suite: str, model: str) -> None:
    assert model in MODELS, f"results/{suite}/{model}: no registered model of that name"
    ok, why = reusable_result(model, suite, RESULTS)
    assert ok, f"results/{suite}/{model}: {why} (re-stamp: python scripts/reproduce.py --restamp)"
    meta = json.loads((RESULTS / suite / f"{model}.meta.json").read_text())
    stamp = meta["model"]["config_hash"]
    for name in (f"{model}.csv", f"{model}.scores.csv"):
        hashes = set(
            pd.read_csv(RESULTS / suite / name, dtype={"model_config_hash": str})["model_config_hash"]
        )
        assert hashes == {stamp}, f"results/{suite}/{name} carries {hashes}, its meta.json {stamp}"
    sampler = {k: v for k, v in meta["model"]["sampler"].items() if k != "cfg_renorm"}
    assert None not in sampler.values(), f"results/{suite}/{model}: sampler {sampler}"
