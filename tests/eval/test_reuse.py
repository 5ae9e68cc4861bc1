"""A result in results/ stands for a new evaluation only when model, suite and rewards are the same."""

from __future__ import annotations

import dataclasses
import json

from tdm_r1.eval.reuse import reusable_result
from tdm_r1.eval.runner import evaluate
from tdm_r1.registry import BENCHMARKS, MODELS
from tdm_r1.testing.evalkit import MODEL_PRESETS, Kit, kit_fixture  # noqa: F401 (fixture)


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
        "the model's image identity changed (adapter.brightness: 0.4 -> 0.5)",
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


def test_the_identity_is_what_determines_the_images_not_the_python_objects(tmp_path) -> None:
    """Names, kinds, relations and descriptions do not enter; weights, LoRA layout, dtype, options
    and every sampling setting do; and meta.json records the sampler's real values."""
    from tdm_r1.eval.model import EvalModel

    base = MODELS.get("toy-4step")
    ident = EvalModel(base.name, base).config_hash()
    for same in (
        dataclasses.replace(base, name="renamed", kind="rl", sources="another text", few_step_base="x"),
        dataclasses.replace(base, baseline="toy-teacher", in_domain=("ocr",), benchmarks=("toy-ocr",)),
        dataclasses.replace(base, hub_id=str(base.hub_id)),  # the same folder, given again
    ):
        assert EvalModel(same.name, same).config_hash() == ident
    teacher = MODELS.get("toy-teacher")
    for other in (
        base.with_overrides(steps=8),
        base.with_overrides(guidance=1.5),
        base.with_overrides(height=128, width=128),
        base.with_overrides(shift=3.0),
        base.with_overrides(spacing="flowmatch"),
        dataclasses.replace(base, dtype="float16"),
        dataclasses.replace(base, options={**base.options, "max_sequence_length": 77}),
        dataclasses.replace(base, lora=MODELS.get("toy-4step-r1-ocr").lora),  # other LoRA weights
        dataclasses.replace(base, lora=None),
        dataclasses.replace(base, hub_id=teacher.hub_id, lora=None, sampling=teacher.sampling),
    ):
        assert EvalModel(other.name, other).config_hash() != ident, other
    sampler = EvalModel(base.name, base).sampler()
    assert (
        sampler["steps"] == 4 and sampler["guidance"] == 1.0 and sampler["height"] == sampler["width"] == 64
    )
    assert None not in (sampler["shift"], sampler["solver"], sampler["spacing"])
