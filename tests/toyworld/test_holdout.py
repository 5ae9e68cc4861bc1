"""The toy world's ``rl`` split: every task but single_object keeps test prompts RL never sees."""

from __future__ import annotations

import collections

from tdm_r1.toyworld.grammar import (
    GENEVAL_TASKS,
    TASKS,
    PromptSampler,
    benchmark_prompts,
    rl_unseen_ids,
    task_prompts,
)
from tdm_r1.toyworld.holdout import HELD_OUT_WORDS, rl_held_out
from tdm_r1.toyworld.world import CLASSES, COLORS, RELATIONS, WORDS


def test_rl_split_is_train_minus_the_held_out_combinations() -> None:
    expected_test_unseen = {
        "single_object": 0, "two_object": 2, "counting": 3, "colors": 6, "position": 6, "text": 4,
    }  # fmt: skip
    for task in TASKS:
        train, rl = task_prompts(task, "train"), task_prompts(task, "rl")
        rl_set = {p["prompt"] for p in rl}
        train_set = {p["prompt"] for p in train}
        assert rl_set < train_set if task not in ("single_object", "color_attr") else rl_set == train_set
        unseen = [p for p in task_prompts(task, "test") if p["prompt"] not in rl_set]
        if task == "color_attr":  # its test prompts are outside the train split already
            assert len(unseen) == len(task_prompts(task, "test"))
        else:
            assert len(unseen) == expected_test_unseen[task], task


def test_held_out_combinations_cover_every_class_colour_relation_and_word_slice() -> None:
    assert {"MAP", "KEY", "FAN", "VAN"} == HELD_OUT_WORDS and set(WORDS) > HELD_OUT_WORDS
    held = {t: [p for p in task_prompts(t, "train") if rl_held_out(p)] for t in TASKS}
    # every class and colour keeps some RL-trained colour prompt, and each is held out somewhere
    for c in CLASSES:
        assert any(p["include"][0]["class"] == c for p in held["colors"])
        assert any(p["include"][0]["class"] == c for p in task_prompts("colors", "rl"))
    for col in COLORS:
        assert any(p["include"][0]["color"] == col for p in held["colors"])
    for rel in RELATIONS:
        assert any(p["include"][1]["position"][0] == rel for p in held["position"])
        assert any(p["include"][1]["position"][0] == rel for p in task_prompts("position", "rl"))
    assert {p["include"][0]["class"] for p in held["counting"]} == set(CLASSES)
    assert [p["prompt"] for p in held["two_object"]] == [
        "a photo of a square and a triangle",
        "a photo of a triangle and a square",
    ]


def test_rl_sampler_never_draws_a_held_out_prompt() -> None:
    sampler = PromptSampler(split="rl", weights={t: 1.0 for t in TASKS}, seed=0)
    drawn = sampler.sample(3000)
    assert not any(rl_held_out(p) for p in drawn)
    assert {p["tag"] for p in drawn} == set(TASKS)
    words = collections.Counter(p["target_text"] for p in drawn if p["tag"] == "text")
    assert set(words) == set(WORDS) - HELD_OUT_WORDS


def test_unseen_ids_label_the_unchanged_suites() -> None:
    ocr, geneval = rl_unseen_ids("ocr"), rl_unseen_ids("geneval")
    cases = {c["id"]: c for c in benchmark_prompts("ocr")}
    assert len(ocr) == 16 and all(cases[i]["target_text"] in HELD_OUT_WORDS for i in ocr)
    tags = collections.Counter(i.rsplit("-", 1)[0] for i in geneval)
    assert set(tags) == set(GENEVAL_TASKS) - {"single_object"}
    assert tags["color_attr"] == 48  # every color_attr test case
    # a per_task subset's ids are the full suite's, so the same labels serve it
    sub = benchmark_prompts("geneval", per_task=16)
    assert {c["id"] for c in sub} <= {c["id"] for c in benchmark_prompts("geneval")}
