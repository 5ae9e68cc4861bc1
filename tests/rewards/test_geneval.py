from __future__ import annotations

import importlib.util
import json
import math
import random
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tdm_r1.errors import ConfigError, MissingExtraError, UnknownNameError
from tdm_r1.registry import REWARDS
from tdm_r1.rewards import geneval as ge
from tdm_r1.rewards.geneval import (
    COLORS,
    GENEVAL_TASKS,
    GenEvalOptions,
    evaluate,
    filter_detections,
    geneval_summary,
    relative_position,
)


def det(cls: str, box: list[float], score: float = 0.95, color: str | None = None) -> dict[str, Any]:
    return {"class": cls, "box": box, "score": score, "color": color}


def left(x: float) -> list[float]:
    """A 100x100 box whose left edge is at x (top at 0)."""
    return [x, 0.0, x + 100.0, 100.0]


# ---------------------------------------------------------------------------- single/two
SINGLE = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}


def test_single_object() -> None:
    r = evaluate(SINGLE, [det("bench", left(0), 0.5)])
    assert (r.correct, r.strict, r.partial, r.reason, r.strict_reason) == (True, True, 1.0, "", "")
    r = evaluate(SINGLE, [det("bench", left(0), 0.3)])  # threshold is strict: > 0.3
    assert (r.correct, r.strict, r.partial) == (False, False, 0.0)
    assert r.reason == "expected bench>=1, found 0"
    r = evaluate(SINGLE, [det("bench", left(0), 0.31), det("dog", left(200), 0.99)])  # other classes ignored
    assert r.correct and r.strict


def test_official_vs_strict_extra_objects() -> None:
    r = evaluate(SINGLE, [det("bench", left(0)), det("bench", left(200), 0.8)])
    assert r.correct and not r.strict  # official: top-1 exists; strict: exactly 1
    assert r.strict_reason == "expected bench==1, found 2"
    assert r.partial == 0.0  # count part max(0, 1 - |1-2|/1)


def test_two_object() -> None:
    meta = {"tag": "two_object", "include": [{"class": "car", "count": 1}, {"class": "dog", "count": 1}]}
    r = evaluate(meta, [det("car", left(0))])
    assert not r.correct and r.reason == "expected dog>=1, found 0"
    assert r.partial == 0.5
    r = evaluate(meta, [det("car", left(0)), det("dog", left(300), 0.4)])
    assert r.correct and r.strict and r.partial == 1.0


# -------------------------------------------------------------------------------- counting
COUNT2 = {
    "tag": "counting",
    "include": [{"class": "clock", "count": 2}],
    "exclude": [{"class": "clock", "count": 3}],
    "prompt": "a photo of two clocks",
}


def test_counting_threshold_and_exact_n() -> None:
    r = evaluate(COUNT2, [det("clock", left(0), 0.95), det("clock", left(200), 0.92)])
    assert (r.correct, r.strict, r.partial) == (True, True, 1.0)
    # 0.9 is not > 0.9 for the counting tag, 0.85 would count for any other tag
    r = evaluate(COUNT2, [det("clock", left(0), 0.95), det("clock", left(200), 0.9)])
    assert not r.correct and r.reason == "expected clock>=2, found 1"
    assert r.partial == 0.5
    other_tag = dict(COUNT2, tag="two_object")
    assert evaluate(other_tag, [det("clock", left(0), 0.95), det("clock", left(200), 0.85)]).correct
    # three confident clocks: the include clause holds, the exclude (exact N) fails
    three = [det("clock", left(x), 0.95) for x in (0, 200, 400)]
    r = evaluate(COUNT2, three)
    assert not r.correct and r.reason == "expected clock<3, found 3"
    assert not r.strict and r.strict_reason == "expected clock==2, found 3\nexpected clock<3, found 3"
    assert r.partial == 0.5  # count part 1 - 1/2; the implied exclude adds no second penalty


def test_counting_partial_values() -> None:
    meta = {
        "tag": "counting",
        "include": [{"class": "cup", "count": 4}],
        "exclude": [{"class": "cup", "count": 5}],
    }
    assert evaluate(meta, [det("cup", left(200 * i)) for i in range(3)]).partial == 0.75
    assert evaluate(meta, [det("cup", left(200 * i)) for i in range(6)]).partial == 0.5
    assert (
        evaluate(meta, [det("cup", left(200 * i)) for i in range(9)]).partial == 0.0
    )  # clamped, not negative


def test_max_objects_cap_and_options() -> None:
    many = [det("person", left(200 * i), 0.5 + i / 100) for i in range(20)]
    meta = {
        "tag": "counting",
        "include": [{"class": "person", "count": 16}],
        "exclude": [{"class": "person", "count": 17}],
    }
    lowconf = [dict(d, score=0.95) for d in many]
    r = evaluate(meta, lowconf)
    assert r.correct and r.strict  # only 16 per class are kept, so "17 or more" never triggers
    r = evaluate(meta, lowconf, options={"max_objects": 20})
    assert not r.correct and r.reason == "expected person<17, found 20"
    kept = filter_detections(many, "single_object")
    assert len(kept["person"]) == 16
    assert [d["score"] for d in kept["person"]] == sorted((d["score"] for d in many), reverse=True)[:16]
    with pytest.raises(ConfigError, match="unknown GenEval option"):
        GenEvalOptions.coerce({"treshold": 0.5})


def test_nms_option() -> None:
    dets = [
        det("cat", [0, 0, 100, 100], 0.9),
        det("cat", [5, 5, 105, 105], 0.8),
        det("cat", [300, 0, 400, 100], 0.7),
    ]
    assert len(filter_detections(dets, "single_object")["cat"]) == 3  # NMS off by default
    kept = filter_detections(dets, "single_object", {"max_overlap": 0.5})["cat"]
    assert [d["score"] for d in kept] == [0.9, 0.7]


# ---------------------------------------------------------------------------------- colours
RED_CAR = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}


def test_colors() -> None:
    assert evaluate(RED_CAR, [det("car", left(0), color="red")]).correct
    r = evaluate(RED_CAR, [det("car", left(0), color="blue")])
    assert not r.correct and r.reason == "expected red car>=1, found 0 red; and 1 blue"
    assert r.partial == 0.5


def test_colors_use_the_most_confident_detections() -> None:
    # input order is not confidence order: the 0.9 red car is the top-1
    dets = [det("car", left(0), 0.5, "blue"), det("car", left(200), 0.9, "red")]
    r = evaluate(RED_CAR, dets)
    assert r.correct  # official: only the top-`count` detections are checked
    assert not r.strict and r.strict_reason == "expected car==1, found 2"
    assert r.partial == 0.5  # count 0, colour min(1, 1 red)/1
    dets = [det("car", left(0), 0.9, "blue"), det("car", left(200), 0.5, "red")]
    r = evaluate(RED_CAR, dets)
    assert not r.correct and r.reason == "expected red car>=1, found 0 red; and 1 blue"


def test_strict_needs_every_detection_in_colour() -> None:
    meta = {"tag": "colors", "include": [{"class": "apple", "count": 2, "color": "green"}]}
    dets = [det("apple", left(0), color="green"), det("apple", left(200), color="green")]
    assert evaluate(meta, dets).strict
    dets3 = [*dets, det("apple", left(400), 0.6, color="red")]
    r = evaluate(meta, dets3)
    assert r.correct and not r.strict
    assert r.partial == pytest.approx((0.5 + 1.0) / 2)
    dets_mixed = [det("apple", left(0), color="green"), det("apple", left(200), color="yellow")]
    r = evaluate(meta, dets_mixed)
    assert (
        not r.correct and r.reason == "expected green apple>=2, found 1 green; and 1 yellow, 1 green"
    )  # COLORS order
    assert r.strict_reason == "expected green apple==2, found 1 green; and 1 yellow, 1 green"  # COLORS order


def test_missing_colour_is_an_error() -> None:
    with pytest.raises(ConfigError, match="has no colour"):
        evaluate(RED_CAR, [det("car", left(0), color=None)])


def test_color_attr() -> None:
    meta = {
        "tag": "color_attr",
        "include": [
            {"class": "wine glass", "count": 1, "color": "purple"},
            {"class": "apple", "count": 1, "color": "black"},
        ],
    }
    good = [det("wine glass", left(0), color="purple"), det("apple", left(200), color="black")]
    assert evaluate(meta, good).correct
    swapped = [det("wine glass", left(0), color="purple"), det("apple", left(200), color="brown")]
    r = evaluate(meta, swapped)
    assert not r.correct and r.reason == "expected black apple>=1, found 0 black; and 1 brown"
    assert r.partial == 0.75


# -------------------------------------------------------------------------------- position
DOG_RIGHT_OF_BEAR = {
    "tag": "position",
    "include": [
        {"class": "teddy bear", "count": 1},
        {"class": "dog", "count": 1, "position": ["right of", 0]},
    ],
}


def test_relative_position_geometry() -> None:
    assert relative_position(left(200), left(0)) == {"right of"}
    assert relative_position(left(0), left(200)) == {"left of"}
    assert relative_position([0, 300, 100, 400], [0, 0, 100, 100]) == {"below"}
    assert relative_position([100, 100, 200, 200], [0, 0, 100, 100]) == {
        "right of",
        "below",
    }  # 80/141 = 0.566
    # margin: offset 20 minus 0.1 * (100 + 100) = 0 on x -> no relation at all
    assert relative_position(left(20), left(0)) == set()
    # offset 40: (40 - 20) / 40 = 0.5 exactly, not > 0.5; offset 41: 21/41 > 0.5
    assert relative_position(left(40), left(0)) == set()
    assert relative_position(left(41), left(0)) == {"right of"}
    # the margin scales with the boxes: a 10-wide pair needs only offset > 4
    assert relative_position([4.5, 0, 14.5, 10], [0, 0, 10, 10]) == {"right of"}
    # normalised by the unshrunk offset: a large vertical offset dilutes dx below 0.5
    assert relative_position([100, 0, 200, 100], [0, 0, 100, 100]) == {"right of"}
    assert relative_position([100, 150, 200, 250], [0, 0, 100, 100]) == {"below"}  # dx 80/180, dy 130/180
    assert relative_position(left(200), left(0), position_threshold=0.0) == {"right of"}


def test_position_rule() -> None:
    good = [det("teddy bear", left(0)), det("dog", left(200))]
    r = evaluate(DOG_RIGHT_OF_BEAR, good)
    assert (r.correct, r.strict, r.partial) == (True, True, 1.0)
    r = evaluate(DOG_RIGHT_OF_BEAR, [det("teddy bear", left(200)), det("dog", left(0))])
    assert not r.correct and r.reason == "expected dog right of target, found left of target"
    assert r.partial == 0.75
    r = evaluate(DOG_RIGHT_OF_BEAR, [det("teddy bear", left(0)), det("dog", left(20))])
    assert not r.correct and r.reason == "expected dog right of target, found  target"  # GenEval's wording
    r = evaluate(DOG_RIGHT_OF_BEAR, [det("dog", left(200))])
    assert not r.correct
    assert r.reason == "expected teddy bear>=1, found 0\nno target for dog to be right of"
    assert r.partial == 0.25  # bear 0; dog mean(count 1, position 0)


def test_position_every_object_against_every_target() -> None:
    meta = {
        "tag": "position",
        "include": [{"class": "cat", "count": 2}, {"class": "dog", "count": 1, "position": ["below", 0]}],
    }
    cats = [det("cat", [0, 0, 100, 100]), det("cat", [200, 0, 300, 100])]
    assert evaluate(meta, [*cats, det("dog", [100, 300, 200, 400])]).correct
    # a second cat lower than the dog breaks "dog below every cat"
    cats_bad = [det("cat", [0, 0, 100, 100]), det("cat", [200, 600, 300, 700], 0.9)]
    r = evaluate(meta, [*cats_bad, det("dog", [100, 300, 200, 400])])
    assert not r.correct and r.reason == "expected dog below target, found above target"


def test_position_must_refer_to_an_earlier_clause() -> None:
    meta = {"tag": "position", "include": [{"class": "dog", "count": 1, "position": ["right of", 0]}]}
    with pytest.raises(ConfigError, match="earlier include clause"):
        evaluate(meta, [det("dog", left(0))])


def test_exclude_of_another_class_in_partial() -> None:
    meta = {
        "tag": "single_object",
        "include": [{"class": "cat", "count": 1}],
        "exclude": [{"class": "dog", "count": 1}],
    }
    r = evaluate(meta, [det("cat", left(0)), det("dog", left(200))])
    assert not r.correct and not r.strict and r.partial == 0.5
    assert r.reason == "expected dog<1, found 1"


def test_partial_is_one_exactly_when_strict() -> None:
    rng = random.Random(0)
    classes = ["cat", "dog", "cup"]
    rels = ["left of", "right of", "above", "below"]
    for _ in range(400):
        k0, k1 = rng.randint(1, 3), rng.randint(1, 2)
        c0, c1 = rng.sample(classes, 2)
        inc1: dict[str, Any] = {"class": c1, "count": k1}
        if rng.random() < 0.5:
            inc1["color"] = rng.choice(COLORS[:3])
        if rng.random() < 0.5:
            inc1["position"] = [rng.choice(rels), 0]
        meta = {
            "tag": rng.choice(["counting", "position", "colors"]),
            "include": [{"class": c0, "count": k0}, inc1],
            "exclude": [{"class": c0, "count": k0 + 1}],
        }
        dets = [
            det(rng.choice(classes), [x := rng.uniform(0, 400), y := rng.uniform(0, 400), x + 80, y + 80],
                rng.uniform(0.2, 1.0), rng.choice(COLORS[:3]))
            for _ in range(rng.randint(0, 6))
        ]  # fmt: skip
        r = evaluate(meta, dets)
        assert (r.partial == 1.0) == r.strict, (meta, dets, r)
        assert r.correct or not r.strict
        assert 0.0 <= r.partial <= 1.0


# ---------------------------------------------------------------------------------- summary
def test_summary_is_the_unweighted_mean_of_tasks() -> None:
    records = [{"tag": "single_object", "correct": 1.0}] * 2 + [
        {"tag": "counting", "correct": c} for c in (1.0, 0.0, 0.0, 0.0)
    ]
    s = geneval_summary(records)
    assert s == {"single_object": 1.0, "counting": 0.25, "overall": 0.625}  # image mean would be 1/2
    import pandas as pd

    rows = [{"tag": t, "correct": float(i % 2 == 0)} for i, t in enumerate(GENEVAL_TASKS * 2)]
    rows.append({"tag": "colors", "correct": math.nan})  # unscored rows are left out
    s = geneval_summary(pd.DataFrame(rows))
    assert list(s) == [*GENEVAL_TASKS, "overall"]
    assert s["overall"] == pytest.approx(sum(s[t] for t in GENEVAL_TASKS) / 6)
    with pytest.raises(ConfigError, match="needs a 'correct' column"):
        geneval_summary([{"tag": "colors"}])


# ------------------------------------------------------------------ the official 553 prompts
def perfect_detections(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Detections that satisfy ``meta`` exactly (counts, colours, relative positions)."""
    offsets = {"left of": (-300, 0), "right of": (300, 0), "above": (0, -300), "below": (0, 300)}
    dets: list[dict[str, Any]] = []
    anchors: list[tuple[float, float]] = []
    for req in meta["include"]:
        x, y = 1000.0, 1000.0
        if "position" in req:
            rel, target = req["position"]
            tx, ty = anchors[target]
            x, y = tx + offsets[rel][0], ty + offsets[rel][1]
        elif anchors:
            x, y = 1000.0, 2000.0 + 1000 * len(anchors)
        anchors.append((x, y))
        for k in range(req["count"]):
            box = (
                [x + 5 * k, y + 5 * k, x + 5 * k + 100, y + 5 * k + 100]
                if "position" in req
                else [x + 150 * k, y, x + 150 * k + 100, y + 100]
            )
            dets.append(det(req["class"], box, 0.95, req.get("color", "white")))
    return dets


def test_official_prompts_with_perfect_detections(shared_data: Path) -> None:
    rows = [
        json.loads(line)
        for line in (shared_data / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 553
    records = []
    for meta in rows:
        r = evaluate(meta, perfect_detections(meta))
        assert r.correct and r.strict and r.partial == 1.0, (meta, r)
        records.append({"tag": meta["tag"], "correct": float(r.correct)})
    summary = geneval_summary(records)
    assert summary == {**dict.fromkeys(GENEVAL_TASKS, 1.0), "overall": 1.0}


# ------------------------------------------------------------------------------ the reward
class FakeDetector:
    """Returns scripted detections; records how it was built."""

    built: list[dict[str, Any]] = []

    def __init__(
        self, *, device: Any = None, min_score: float = 0.0, script: list[list[dict[str, Any]]] | None = None
    ) -> None:
        FakeDetector.built.append({"device": device, "min_score": min_score})
        self.script = script or []

    def __call__(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        assert images.shape[0] == len(metadata)
        return [self.script.pop(0) for _ in metadata]


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("tdm_fake_detectors")
    module.FakeDetector = FakeDetector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tdm_fake_detectors", module)
    ge.DETECTOR_BACKENDS.add_lazy("fake", "tdm_fake_detectors:FakeDetector")
    FakeDetector.built.clear()
    yield
    ge.DETECTOR_BACKENDS.remove("fake")


def test_reward_columns_and_score_kinds(fake_backend: None) -> None:
    script = [[det("car", left(0), 0.9, "blue"), det("car", left(200), 0.5, "red")], [det("bench", left(0))]]
    metas = [dict(RED_CAR, prompt="a photo of a red car"), {"prompt": "plain prompt"}, SINGLE]
    images = torch.zeros(3, 3, 8, 8)
    reward = REWARDS.get("geneval")(backend="fake", script=[list(s) for s in script], threshold=0.4)
    assert FakeDetector.built[-1] == {"device": None, "min_score": 0.4}
    out = reward(images=images, prompts=[m.get("prompt", "") for m in metas], metadata=metas)
    assert out.scores[0].item() == 0.0 and math.isnan(out.scores[1].item()) and out.scores[2].item() == 1.0
    assert out.details["correct"][0].item() == 0.0
    assert out.details["partial"][0].item() == 0.5
    assert out.details["reason"][0] == "expected red car>=1, found 0 red; and 1 blue"
    assert out.details["tag"] == ["colors", "", "single_object"]
    assert out.details["nan_reason"] == ["", ge.NO_METADATA, ""]
    assert json.loads(out.details["detections"][0]) == {
        "car": [[0.0, 0.0, 100.0, 100.0, 0.9, "blue"], [200.0, 0.0, 300.0, 100.0, 0.5, "red"]]
    }
    assert re.fullmatch(r"geneval@2-fake-opt[0-9a-f]{8}-correct", reward.id)  # threshold 0.4 is non-default
    assert REWARDS.get("geneval")(backend="fake", script=[]).id == "geneval@2-fake-correct"

    partial = REWARDS.get("geneval")(backend="fake", score="partial", script=[list(s) for s in script])
    out = partial(images=images, prompts=["", "", ""], metadata=metas)
    assert out.scores[0].item() == 0.5 and out.scores[2].item() == 1.0


def test_reward_option_errors(fake_backend: None) -> None:
    with pytest.raises(ConfigError, match="score='best'"):
        REWARDS.get("geneval")(backend="fake", score="best")
    with pytest.raises(ConfigError, match="bad option for the GenEval 'fake' detector"):
        REWARDS.get("geneval")(backend="fake", detector_paht="/x")
    with pytest.raises(
        UnknownNameError, match=r"Unknown GenEval detector backend 'yolo'\. Available .*: fake, mask2"
    ):
        REWARDS.get("geneval")(backend="yolo")


def test_mmdet_backend_missing_is_a_clear_error() -> None:
    if importlib.util.find_spec("mmdet") is not None:
        pytest.skip("mmdet is installed here")
    with pytest.raises(MissingExtraError, match=r"tdmbench\[mmdet\].*docs/geneval-mmdet.md"):
        REWARDS.get("geneval")(backend="mmdet")


def test_shapes_slot_holds_the_toy_detector() -> None:
    from tdm_r1.toyworld.detector import ShapeDetector

    assert ge.DETECTOR_BACKENDS.entry("shapes").target == "tdm_r1.toyworld.detector:ShapeDetector"
    assert ge.load_detector_class("shapes") is ShapeDetector
