"""Prompts of the toy world, in GenEval format, deterministic given a seed.

Tasks: the six GenEval tasks over the toy classes and colours (``single_object``, ``two_object``,
``counting``, ``colors``, ``position``, ``color_attr``) and ``text`` (``a sign that says "CAT"``).
Every prompt carries GenEval metadata (``tag``, ``include``, ``exclude``) or ``target_text``.

Train / test split. ``color_attr`` holds out a quarter of its prompts (180 colour x class
combinations): they appear only in the test split, so a model must compose colours and classes
it learned separately. The other tasks have too few distinct prompts to hold any out (3
single-object prompts; 24 position prompts = 6 ordered class pairs x 4 relations, and holding out
half of them left relation words with too few training pairs: the teacher scored 0.28 on training
position prompts and 0.06 on held-out ones), so their test cases differ from training only by seed.

RL split. RL post-training draws from ``rl``: the ``train`` split minus one held-out combination
per slice of every task (:mod:`tdm_r1.toyworld.holdout`), so that every evaluation suite has test
cases whose prompts the RL stage never saw (:func:`rl_unseen_ids`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from tdm_r1.data import GENEVAL_TASKS
from tdm_r1.toyworld.holdout import rl_held_out
from tdm_r1.toyworld.world import CLASSES, COLORS, NUMBERS, RELATIONS, WORDS, article, plural

TASKS: tuple[str, ...] = (*GENEVAL_TASKS, "text")

#: Fraction of distinct prompts held out for the test split, per task.
HOLDOUT: dict[str, float] = {"color_attr": 0.25}

#: Evaluation cases per GenEval task in the test benchmark (prompts cycle to fill them).
CASES_PER_TASK = 48
#: Evaluation cases of the text task (each word 4 times).
TEXT_CASES = 4 * len(WORDS)
#: Seed offset between repeats of one prompt in the evaluation cases (more than any suite's images per prompt).
SEED_STRIDE = 1000


def _obj(
    cls: str, count: int = 1, color: str | None = None, position: list[Any] | None = None
) -> dict[str, Any]:
    clause: dict[str, Any] = {"class": cls, "count": count}
    if color is not None:
        clause["color"] = color
    if position is not None:
        clause["position"] = position
    return clause


def _all_prompts(task: str, *, counts: tuple[int, ...]) -> Iterator[dict[str, Any]]:
    """Every distinct prompt of a task, in a fixed order."""
    if task == "single_object":
        for c in CLASSES:
            yield {"tag": task, "include": [_obj(c)], "prompt": f"a photo of {article(c)} {c}"}
    elif task == "two_object":
        for a in CLASSES:
            for b in CLASSES:
                if a != b:
                    yield {
                        "tag": task,
                        "include": [_obj(a), _obj(b)],
                        "prompt": f"a photo of {article(a)} {a} and {article(b)} {b}",
                    }
    elif task == "counting":
        for c in CLASSES:
            for n in counts:
                noun = c if n == 1 else plural(c)
                yield {
                    "tag": task,
                    "include": [_obj(c, n)],
                    "exclude": [_obj(c, n + 1)],
                    "prompt": f"a photo of {NUMBERS[n]} {noun}",
                }
    elif task == "colors":
        for c in CLASSES:
            for col in COLORS:
                yield {
                    "tag": task,
                    "include": [_obj(c, color=col)],
                    "prompt": f"a photo of {article(col)} {col} {c}",
                }
    elif task == "position":
        for a in CLASSES:
            for b in CLASSES:
                if a == b:
                    continue
                for rel in RELATIONS:
                    # GenEval: clause 0 is the reference object B, clause 1 is A with position [rel, 0].
                    yield {
                        "tag": task,
                        "include": [_obj(b), _obj(a, position=[rel, 0])],
                        "prompt": f"a photo of {article(a)} {a} {rel} {article(b)} {b}",
                    }
    elif task == "color_attr":
        for a in CLASSES:
            for b in CLASSES:
                if a == b:
                    continue
                for ca in COLORS:
                    for cb in COLORS:
                        if ca == cb:
                            continue
                        yield {
                            "tag": task,
                            "include": [_obj(a, color=ca), _obj(b, color=cb)],
                            "prompt": f"a photo of {article(ca)} {ca} {a} and {article(cb)} {cb} {b}",
                        }
    elif task == "text":
        for w in WORDS:
            yield {"tag": task, "target_text": w, "prompt": f'a sign that says "{w}"'}
    else:
        raise ValueError(f"unknown toy task {task!r}; valid: {', '.join(TASKS)}")


def _is_held_out(prompt: str, fraction: float) -> bool:
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


SPLITS: tuple[str, ...] = ("train", "test", "rl")


def task_prompts(task: str, split: str) -> list[dict[str, Any]]:
    """Distinct prompts of ``task`` in ``split`` ("train" | "test" | "rl"), in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if split == "rl":
        return [p for p in task_prompts(task, "train") if not rl_held_out(p)]
    counts = (1, 2, 3, 4) if split == "train" else (2, 3, 4)
    prompts = list(_all_prompts(task, counts=counts))
    frac = HOLDOUT.get(task)
    if frac is None:
        return prompts
    return [p for p in prompts if _is_held_out(p["prompt"], frac) == (split == "test")]


def benchmark_prompts(
    task: str,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    per_task: int | None = None,
    balance_rl: bool = False,
) -> list[dict[str, Any]]:
    """Evaluation cases with stable ids: ``task`` is "geneval" (all six tasks) or "ocr" (text).

    Prompts cycle (in a seeded order) to fill :data:`CASES_PER_TASK` cases per GenEval task, so
    every task weighs the same number of images whatever its number of distinct prompts. The r-th
    repeat of a prompt carries ``seed_offset = SEED_STRIDE * r``, so that its images are drawn
    with other seeds than the earlier repeats' (otherwise a repeat is a copy of the same image and
    counts twice).

    ``per_task`` (default: all cases) keeps the first cases of every task: a smaller suite whose
    cases are those of the full one (same ids, prompts and seeds), balanced over the tasks.
    ``balance_rl`` makes each task's ``per_task`` cases half unseen, half seen by RL training (the
    first of each kind in the full suite's order; a task short of one kind fills up with the other),
    so that the seen and unseen rows of a small suite both have cases to measure.
    """
    if task == "geneval":
        tasks, per_task_all = GENEVAL_TASKS, CASES_PER_TASK
    elif task in ("ocr", "text"):
        tasks, per_task_all = ("text",), TEXT_CASES
    else:
        raise ValueError(f"toy benchmark task must be 'geneval' or 'ocr', got {task!r}")
    if per_task is not None and not 1 <= per_task <= per_task_all:
        raise ValueError(f"per_task must be in 1..{per_task_all}, got {per_task}")
    rng = random.Random(f"{seed}-{split}-{task}")
    cases: list[dict[str, Any]] = []
    for t in tasks:
        prompts = task_prompts(t, split)
        order = list(range(len(prompts)))
        rng.shuffle(order)
        task_cases = []
        for k in range(per_task_all if per_task is None or balance_rl else per_task):
            case = dict(prompts[order[k % len(order)]])
            case["id"] = f"{t}-{k:03d}"
            case["seed_offset"] = SEED_STRIDE * (k // len(order))
            task_cases.append(case)
        if balance_rl and per_task is not None:
            task_cases = _balanced(task_cases, {p["prompt"] for p in task_prompts(t, "rl")}, per_task)
        cases += task_cases
    return cases[:n] if n is not None else cases


def _balanced(cases: list[dict[str, Any]], seen: set[str], k: int) -> list[dict[str, Any]]:
    """``k`` of ``cases`` (in their order): the first ceil(k/2) whose prompt is not in ``seen`` and
    the first k//2 that are, topped up from the other kind when one runs short."""
    unseen = [i for i, c in enumerate(cases) if c["prompt"] not in seen]
    known = [i for i, c in enumerate(cases) if c["prompt"] in seen]
    take_u = min(len(unseen), max(k - len(known), (k + 1) // 2))
    keep = sorted(unseen[:take_u] + known[: k - take_u])
    return [cases[i] for i in keep]


def rl_unseen_ids(task: str) -> frozenset[str]:
    """Ids of the test cases of :func:`benchmark_prompts` (``task``: "geneval" | "ocr") whose prompt
    is not in the ``rl`` split: prompts RL post-training never saw.

    The ids of a ``per_task`` subset are those of the full suite, so this set serves both.
    """
    tasks = GENEVAL_TASKS if task == "geneval" else ("text",)
    seen = {p["prompt"] for t in tasks for p in task_prompts(t, "rl")}
    return frozenset(c["id"] for c in benchmark_prompts(task) if c["prompt"] not in seen)


#: Task weights for training prompts (teacher / distillation data and RL).
TEACHER_TASK_WEIGHTS: dict[str, float] = {
    "single_object": 1.0,
    "two_object": 1.0,
    "counting": 1.5,
    "colors": 1.0,
    "position": 1.5,
    "color_attr": 1.5,
    "text": 2.0,
}


class PromptSampler:
    """Infinite seeded stream of training prompts with task weights."""

    def __init__(self, split: str = "train", weights: dict[str, float] | None = None, seed: int = 0) -> None:
        weights = dict(weights or TEACHER_TASK_WEIGHTS)
        unknown = set(weights) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown toy tasks {sorted(unknown)}; valid: {', '.join(TASKS)}")
        self.tasks = [t for t, w in weights.items() if w > 0]
        self.weights = [weights[t] for t in self.tasks]
        self.prompts = {t: task_prompts(t, split) for t in self.tasks}
        self.rng = random.Random(seed)

    def sample(self, n: int) -> list[dict[str, Any]]:
        out = []
        for t in self.rng.choices(self.tasks, weights=self.weights, k=n):
            out.append(dict(self.rng.choice(self.prompts[t])))
        return out

    def state(self) -> object:
        return self.rng.getstate()

    def set_state(self, state: Any) -> None:
        self.rng.setstate(state)
