"""Prompts that RL post-training never sees: the toy world's ``rl`` split.

The toy teacher and the 4-step student were trained on the ``train`` split (every word, every
class/colour/count/relation combination except a quarter of ``color_attr``). RL post-training
(TDM-R1 and every method of the arena) draws its prompts from the ``rl`` split instead: the
``train`` split minus one held-out *combination* per slice of every task, chosen by a fixed rule
(not a hash) so that each task, word list, class, colour and relation is covered:

========== ========================================================= ===========================
task       held out of RL training                                   test prompts held out
========== ========================================================= ===========================
text       every 4th word: MAP, KEY, FAN, VAN                        4 of 16 words
two_object the pair {square, triangle}, in both orders               2 of 6
counting   (class i, count n) with (i + n) % 3 == 0                  3 of 9 (counts 2-4)
colors     (class i, colour j) with (i + j) % 3 == 0                 6 of 18
position   (ordered pair p, relation r) with (p + r) % 4 == 0        6 of 24
color_attr the test split's colour x class pairs (never in training) all 39 test prompts
single     none (3 prompts: one per class)                           0 of 3
========== ========================================================= ===========================

"Unseen" therefore means *unseen by the RL stage*: the base models learned every word and
class from their own pre-training data (as SD3.5 has seen text before OCR post-training); what an
unseen prompt measures is whether the post-training gain transfers to prompts the RL loop never
rewarded. Evaluation suites are unchanged by the split (same cases, ids and seeds); their cases are
only labelled seen / unseen (:func:`tdm_r1.toyworld.grammar.rl_unseen_ids`).
"""

from __future__ import annotations

from typing import Any

from tdm_r1.toyworld.world import CLASSES, COLORS, RELATIONS, WORDS

#: RL-held-out words of the text task.
HELD_OUT_WORDS: frozenset[str] = frozenset(w for i, w in enumerate(WORDS) if i % 4 == 3)
#: RL-held-out unordered class pair of two_object.
HELD_OUT_PAIR: frozenset[str] = frozenset({"square", "triangle"})

_ORDERED_PAIRS = [(a, b) for a in CLASSES for b in CLASSES if a != b]
_COLOR_INDEX = {c: j for j, c in enumerate(COLORS)}


def _clause(record: dict[str, Any], k: int) -> dict[str, Any]:
    return record["include"][k]


def rl_held_out(record: dict[str, Any]) -> bool:
    """Whether the ``rl`` split leaves out this ``train``-split prompt record (the table above).

    ``color_attr`` needs no rule: its test prompts are outside the ``train`` split already.
    """
    tag = record.get("tag")
    if tag == "text":
        return record["target_text"] in HELD_OUT_WORDS
    if tag == "two_object":
        return {_clause(record, 0)["class"], _clause(record, 1)["class"]} == HELD_OUT_PAIR
    if tag == "counting":
        c = _clause(record, 0)
        return (CLASSES.index(c["class"]) + int(c["count"])) % 3 == 0
    if tag == "colors":
        c = _clause(record, 0)
        return (CLASSES.index(c["class"]) + _COLOR_INDEX[c["color"]]) % 3 == 0
    if tag == "position":
        ref, obj = _clause(record, 0), _clause(record, 1)
        p = _ORDERED_PAIRS.index((obj["class"], ref["class"]))
        return (p + RELATIONS.index(obj["position"][0])) % 4 == 0
    return False  # single_object, and color_attr training prompts
