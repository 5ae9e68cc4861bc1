"""A result in results/ stands for a new evaluation only when model, suite and rewards are the same."""

from __future__ import annotations

import dataclasses
import json

from evalkit import MODEL_PRESETS, Kit, kit_fixture  # noqa: F401 (fixture)

from tdm_r1.eval.reuse import reusable_result
from tdm_r1.eval.runner import evaluate
from tdm_r1.registry import BENCHMARKS, MODELS


def test_reuse_only_a_matching_complete_result(kit: Kit) -> None:
    assert reusable_result("kit-4step", "kit-bright", kit.results) == (
        False,
        f"{kit.results / 'kit-bright' / 'kit-4step.csv'} is missing",
    )
    evaluate("kit-4step", ["kit-bright"], results_root=kit.results, progress=False)
    ok, why = reusable_result("kit-4step", "kit-bright", kit.results)
    assert ok and "matches" in why
    # the model changes (its weights would change its config identity)
    entry = MODELS._entries["kit-4step"]
    changed = dataclasses.replace(entry.obj, brightness=entry.obj.brightness + 0.1)
    MODELS._entries["kit-4step"] = dataclasses.replace(entry, obj=changed)
    assert reusable_result("kit-4step", "kit-bright", kit.results) == (
        False,
        "the model's identity (preset or weights) changed",
    )
    MODELS._entries["kit-4step"] = entry
    # the suite changes
    bench = BENCHMARKS._entries["kit-bright"]
    newer = dataclasses.replace(bench.obj, version=bench.obj.version + "x")
    BENCHMARKS._entries["kit-bright"] = dataclasses.replace(bench, obj=newer)
    assert not reusable_result("kit-4step", "kit-bright", kit.results)[0]
    BENCHMARKS._entries["kit-bright"] = bench
    # a recorded reward version that is not today's
    meta_path = kit.results / "kit-bright" / "kit-4step.meta.json"
    meta = json.loads(meta_path.read_text())
    meta["rewards"][0]["reward_versions"] = ["0-old"]
    meta_path.write_text(json.dumps(meta))
    ok, why = reusable_result("kit-4step", "kit-bright", kit.results)
    assert not ok and "changed (['0-old'] -> 1)" in why.replace("'1'", "1")
    # a --limit run is never reused
    evaluate("kit-4step", ["kit-bright"], results_root=kit.results, limit=2, progress=False)
    assert not reusable_result("kit-4step", "kit-bright", kit.results)[0]
