"""How a measured number was made, and whether that is the protocol of the published numbers.

Every summary row (``results/<benchmark>/<model>.csv``) carries two columns:

* ``protocol``: what produced it, e.g. ``images/prompt=4; prompts=553/553;
  geneval@2-mask2former-s800x1333-correct: backend=mask2former, detector_scale=800x1333`` (reward
  backend and engine, detector input scale, judge template hash, images per prompt);
* ``protocol_status``: ``official`` when the suite, the sample count and the reward engine all
  follow the setup of the published numbers; ``approximate: <why>`` otherwise (each reason
  named); ``toy world (not comparable to published)`` for the toy suites.

Everything is read from the benchmark spec, the reward's recorded ``version`` (which carries its
identity: backend, scale, template hash) and its options, so the same text can be rebuilt from a
run's ``meta.json`` for result files written before these columns existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OFFICIAL = "official"
TOY = "toy world (not comparable to published)"
APPROXIMATE = "approximate: "

#: The published protocol of each official suite: (prompts, images per prompt).
PUBLISHED_PROTOCOL: dict[str, tuple[int, int]] = {
    "geneval": (553, 4),  # GenEval: 553 prompts x 4 images (djghosh13/geneval)
    "ocr": (1018, 1),  # Flow-GRPO OCR test set, one image per prompt
    "pickscore": (2048, 1),  # Flow-GRPO Pick-a-Pic test split, one image per prompt
    "drawbench": (200, 5),  # the published file lists each of 200 prompts 5 times
}

#: Rewards whose tdmbench implementation follows the published engine and preprocessing
#: (checked line by line against the official code, issue 11): no deviation to report.
FAITHFUL_REWARDS: frozenset[str] = frozenset({"pickscore", "aesthetic", "imagereward", "clipscore"})

#: GenEval's official ``--options`` (``tdm_r1.rewards.geneval.GenEvalOptions`` defaults).
_GENEVAL_DEFAULTS = {
    "threshold": 0.3,
    "counting_threshold": 0.9,
    "max_objects": 16,
    "max_overlap": 1.0,
    "position_threshold": 0.1,
}


@dataclass(frozen=True)
class Protocol:
    detail: str
    status: str


def is_toy(bench: Mapping[str, Any]) -> bool:
    prompts = bench.get("prompts") or {}
    return str(prompts.get("type", "")) == "toy" or str(bench.get("name", "")).startswith("toy-")


def reward_protocol(name: str, version: str, options: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """``(fields, deviations)`` of one reward from its recorded ``version`` and ``options``."""
    version = str(version)
    parts = version.split("-")
    if name == "geneval":
        return _geneval(parts, options)
    if name == "ocr":
        engine = parts[1] if len(parts) > 1 else "unknown"
        fields = {"engine": "-".join(parts[1:]) or "unknown"}
        if engine.startswith("paddleocr") and "2.9.1" in version:
            return fields, []
        if engine.startswith("paddleocr"):
            return fields, [
                "OCR engine PaddleOCR of unrecorded version (published: PaddleOCR 2.9.1 English models)"
            ]
        return fields, [f"OCR engine {engine} (published numbers: PaddleOCR 2.9.1 English models)"]
    if name == "hpsv2.1":
        if parts[0] == "1":
            return {"preprocess": "centre-crop"}, ["HPS v2.1 centre-crop preprocessing (official: letterbox)"]
        return {"preprocess": "letterbox-224"}, []
    if name == "vlm-judge":
        from tdm_r1.rewards.vlm_judge import template_status

        match = re.search(r"-tpl([0-9a-f]+)$", version)
        fields = {"template_sha256": match.group(1) if match else "unknown"}
        status = template_status(version)
        return fields, [] if status == OFFICIAL else [f"vlm-judge {status}"]
    if name in FAITHFUL_REWARDS:
        return {}, []
    return {}, [f"no published protocol known for reward {name!r}"]


def _canonical(name: str) -> str:
    from tdm_r1.registry import REWARDS

    return REWARDS.canonical(name) if name in REWARDS else name


def _geneval(parts: list[str], options: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    backend = parts[1] if len(parts) > 1 else str(options.get("backend", "mask2former"))
    scale = next((p[1:] for p in parts[2:] if re.fullmatch(r"s\d+x\d+", p)), "")
    if not scale:
        # version 1 had no scale: mask2former ran at its processor size, mmdet at its config's
        scale = "processor" if "processor" in parts or (parts[0] == "1" and backend == "mask2former") else ""
        scale = scale or ("800x1333" if backend == "mmdet" else "unknown")
    fields = {"backend": backend, "detector_scale": scale}
    why: list[str] = []
    if backend == "mask2former":
        why.append("GenEval detector is the transformers Mask2Former port, not the official mmdet checkpoint")
    elif backend != "mmdet":
        why.append(f"GenEval detector backend {backend!r} (official: mmdet Mask2Former Swin-S)")
    if scale != "800x1333":
        why.append(f"GenEval detector input scale {scale} (official: shorter side 800, longer <= 1333)")
    score = parts[-1] if len(parts) > 2 else "correct"
    if score != "correct":
        why.append(f"GenEval score={score} (the benchmark metric is 'correct')")
    changed = sorted(k for k, v in _GENEVAL_DEFAULTS.items() if k in options and float(options[k]) != v)
    if changed or any(re.fullmatch(r"opt[0-9a-f]{8}", p) for p in parts):
        why.append(f"non-default GenEval options {changed or '(thresholds)'}")
    return fields, why


def describe(
    bench: Mapping[str, Any],
    rewards: Iterable[tuple[str, str, Mapping[str, Any]]],
    n_prompts: int,
) -> Protocol:
    """The protocol of measured numbers of suite ``bench`` (its ``to_dict()`` / meta.json form).

    Args:
        rewards: ``(reward name, recorded version, options)`` of the rewards behind the numbers.
        n_prompts: how many of the suite's prompts were scored (less than all under ``--limit``).
    """
    name = str(bench.get("name", ""))
    per_prompt = int(bench.get("images_per_prompt", 1) or 1)
    total = (bench.get("prompts") or {}).get("count")
    detail = [
        f"images/prompt={per_prompt}",
        f"prompts={n_prompts}" + (f"/{total}" if total is not None else ""),
    ]
    why: list[str] = []
    for reward, version, options in rewards:
        fields, deviations = reward_protocol(_canonical(reward), version, options)
        text = f"{reward}@{version}"
        if fields:
            text += ": " + ", ".join(f"{k}={v}" for k, v in fields.items())
        detail.append(text)
        why += [d for d in deviations if d not in why]
    if is_toy(bench):
        return Protocol("; ".join(detail), TOY)
    published = PUBLISHED_PROTOCOL.get(name)
    if published is None:
        why.insert(0, f"suite {name!r} has no published protocol")
    else:
        n_published, ipp_published = published
        if per_prompt != ipp_published:
            why.insert(0, f"{per_prompt} images per prompt (published: {ipp_published})")
        if n_prompts != n_published:
            why.insert(0, f"{n_prompts} of {n_published} prompts (--limit or another prompt file)")
    return Protocol("; ".join(detail), OFFICIAL if not why else APPROXIMATE + "; ".join(why))


def combine(statuses: Iterable[str]) -> str:
    """One status for several metrics of a suite: official only if all are; reasons merged."""
    statuses = [s for s in statuses if s]
    if not statuses:
        return ""
    if any(s == TOY for s in statuses):
        return TOY
    reasons: list[str] = []
    for s in statuses:
        if s.startswith(APPROXIMATE):
            for r in s[len(APPROXIMATE) :].split("; "):
                if r not in reasons:
                    reasons.append(r)
        elif s != OFFICIAL and s not in reasons:
            reasons.append(s)
    return OFFICIAL if not reasons else APPROXIMATE + "; ".join(reasons)


def from_meta(meta: Mapping[str, Any], reward: str) -> Protocol:
    """The protocol of ``reward``'s numbers in a run's ``meta.json`` (for result files written
    before the ``protocol`` columns existed)."""
    uses = [r for r in meta.get("rewards", []) if r.get("name") == reward] or [{"name": reward}]
    rows = [
        (reward, v, use.get("options") or {}) for use in uses for v in (use.get("reward_versions") or ["?"])
    ]
    n = meta.get("n_prompts")
    bench = meta.get("benchmark") or {}
    total = (bench.get("prompts") or {}).get("count")
    return describe(bench, rows, int(n) if n is not None else int(total or 0))


# ---------------------------------------------------------------------- leaderboard columns
def protocol_column(benchmark: str, *, detail: bool = False) -> str:
    """``<benchmark>:protocol`` (status) or ``<benchmark>:protocol_detail`` in the leaderboard table."""
    return f"{benchmark}:protocol{'_detail' if detail else ''}"


def protocol_status(row: Mapping[str, Any], benchmark: str) -> str:
    """The protocol cell of one leaderboard entry in one section: the measured row's status, or
    ``published`` for a reported row (its protocol is its source's)."""
    if row["kind"] != "measured":
        return "published"
    value = row.get(protocol_column(benchmark))
    return value if isinstance(value, str) and value else "unknown"


def markdown_details(rows: Any, benchmark: str) -> list[str]:
    """Markdown lines listing each measured row's protocol detail in one section (or none)."""
    found = [
        (r["model"], r.get(protocol_column(benchmark, detail=True)))
        for _, r in rows.iterrows()
        if r["kind"] == "measured"
    ]
    found = [(m, d) for m, d in found if isinstance(d, str) and d]
    if not found:
        return []
    return [f"Protocol of the measured rows ({benchmark}):", "", *[f"- {m}: `{d}`" for m, d in found], ""]
