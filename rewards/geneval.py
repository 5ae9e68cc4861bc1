"""GenEval reward (``geneval``): the official GenEval rules over a detector backend's detections.

The rules are pure and live in :mod:`tdm_r1.rewards.geneval_rules` (re-exported here):
:func:`evaluate` gives each image three verdicts, ``correct`` (the official GenEval rule, the
benchmark metric), ``strict`` (Flow-GRPO's ``strict_correct``) and ``partial`` (a dense training
score in [0, 1]).

The reward runs a detector backend, chosen by name through :data:`DETECTOR_BACKENDS` (a
:class:`~tdm_r1.registry.Registry` of lazy ``"module:Class"`` targets, imported on first use),
and scores its detections. A detector class
is constructed as ``cls(device=..., min_score=..., **options)``, where ``min_score`` is the lowest
confidence the rules can use (a backend may drop detections below it) and ``options`` are the
user's ``--reward-option geneval.KEY=VALUE`` entries that are not GenEval options; it implements
the :class:`Detector` protocol. A new backend (e.g. the toy world's ``ShapeDetector`` in the
``shapes`` slot) takes ``**options`` and ignores or rejects what it does not use; the built-in
ones reject unknown options, which the reward reports as a ConfigError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch

from tdm_r1.data import GENEVAL_TASKS  # one definition, re-exported here
from tdm_r1.errors import ConfigError, TdmError
from tdm_r1.registry import Registry, register_reward
from tdm_r1.rewards.base import NAN_REASON, Reward, RewardOutput
from tdm_r1.rewards.geneval_rules import (  # the rule core, re-exported
    COLORS,
    OBJECT_NAMES,
    RELATIONS,
    Detection,
    GenEvalOptions,
    GenEvalResult,
    check_clauses,
    compute_iou,
    evaluate,
    evaluate_filtered,
    filter_detections,
    partial_credit,
    relative_position,
)
from tdm_r1.weights import WeightFile, declare

__all__ = [
    "COLORS",
    "DETECTOR_BACKENDS",
    "GENEVAL_TASKS",
    "OBJECT_NAMES",
    "RELATIONS",
    "Detection",
    "Detector",
    "GenEvalOptions",
    "GenEvalResult",
    "GenEvalReward",
    "check_clauses",
    "compute_iou",
    "evaluate",
    "evaluate_filtered",
    "filter_detections",
    "geneval_summary",
    "load_detector_class",
    "partial_credit",
    "relative_position",
]

log = logging.getLogger(__name__)

#: Detector backends, name -> ``"module:Class"`` imported on first use (a plug-in adds its own
#: with ``DETECTOR_BACKENDS.add_lazy(name, "module:Class")``).
DETECTOR_BACKENDS: Registry[type] = Registry(
    "GenEval detector backend",
    targets={
        "mask2former": "tdm_r1.rewards.geneval_mask2former:Mask2FormerDetector",
        "mmdet": "tdm_r1.rewards.geneval_mmdet:MmdetDetector",
        "shapes": "tdm_r1.toyworld.detector:ShapeDetector",
    },
    hint="(choose one with --reward-option geneval.backend=NAME.)",
)

#: Weights of the ``mask2former`` backend (transformers ``save_pretrained`` folders).
MASK2FORMER_WEIGHTS = WeightFile(
    key="geneval.mask2former",
    hub_id="facebook/mask2former-swin-small-coco-instance",
    filename=None,
    size="280 MB",
    env="TDMBENCH_GENEVAL_DETECTOR",
    option="--reward-option geneval.detector_path",
    description="Mask2Former Swin-S COCO instance segmentation (GenEval detector, transformers port)",
)
CLIP_WEIGHTS = WeightFile(
    key="geneval.clip",
    hub_id="openai/clip-vit-large-patch14",
    filename=None,
    size="1.7 GB",
    env="TDMBENCH_GENEVAL_CLIP",
    option="--reward-option geneval.clip_path",
    description="CLIP ViT-L/14 (OpenAI) for GenEval's zero-shot colour classifier",
)
declare(MASK2FORMER_WEIGHTS, CLIP_WEIGHTS)

SCORE_KINDS: tuple[str, ...] = ("correct", "strict", "partial")
NO_METADATA = "no GenEval metadata (needs 'include' clauses)"


class Detector(Protocol):
    """A GenEval detector backend.

    ``__call__(images (N,3,H,W) float in [0,1], metadata: N dicts) -> N lists of detections``,
    each ``{"class", "box" [x0,y0,x1,y1] pixels, "score", "color"}``. ``color`` must be set
    (one of :data:`COLORS`) for every detection of a class that an include clause of that image's
    metadata asks a colour of, at least for detections scoring above ``min_score`` (the 16 best
    per class suffice); it may be None elsewhere.
    """

    def __call__(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[list[Detection]]: ...


# --------------------------------------------------------------------------------- summary
def geneval_summary(
    df_or_records: Any, *, column: str = "correct", tag_column: str = "tag"
) -> dict[str, float]:
    """Per-task accuracy (mean of ``column`` over the images of each tag) and ``overall``.

    ``overall`` is the unweighted mean of the task accuracies (GenEval's "Overall score (avg. over
    tasks)"), not the image mean. Rows whose ``column`` is NaN (unscored) are left out. Tasks are
    returned in :data:`GENEVAL_TASKS` order, then any other tags; a warning is logged when one of
    the six official tasks is missing (``overall`` then averages the tasks present).
    """
    import pandas as pd

    df = df_or_records if isinstance(df_or_records, pd.DataFrame) else pd.DataFrame(list(df_or_records))
    for col in (column, tag_column):
        if col not in df.columns:
            raise ConfigError(f"geneval_summary needs a {col!r} column; got columns {list(df.columns)}")
    values = pd.to_numeric(df[column].astype(float), errors="coerce")
    keep = values.notna()
    if not bool(keep.all()):
        log.warning("geneval_summary: %d rows have no %r value and are left out", int((~keep).sum()), column)
    acc = values[keep].groupby(df.loc[keep, tag_column].astype(str)).mean()
    tags = [t for t in GENEVAL_TASKS if t in acc.index] + sorted(
        t for t in acc.index if t not in GENEVAL_TASKS
    )
    missing = [t for t in GENEVAL_TASKS if t not in acc.index]
    if missing:
        log.warning(
            "geneval_summary: tasks %s have no images; overall averages the %d present", missing, len(tags)
        )
    out = {t: float(acc[t]) for t in tags}
    out["overall"] = float(np.mean([out[t] for t in tags])) if tags else math.nan
    return out


# ---------------------------------------------------------------------------------- reward
def load_detector_class(backend: str) -> type:
    """Import the detector class of ``backend`` (see :data:`DETECTOR_BACKENDS`)."""
    return DETECTOR_BACKENDS.get(backend)


@register_reward("geneval")
class GenEvalReward(Reward):
    """GenEval over a detector backend.

    Args:
        backend: ``mask2former`` (transformers Mask2Former Swin-S COCO + CLIP ViT-L/14 colours),
            ``mmdet`` (the official mmdet checkpoint, ``tdmbench[mmdet]``) or ``shapes`` (the toy
            world's rule-based detector).
        score: which verdict is the reward score: ``correct`` (official, default, for evaluation),
            ``strict`` or ``partial`` (dense, for training).
        device: torch device for the detector.
        threshold, counting_threshold, max_objects, max_overlap, position_threshold: GenEval's
            options (official defaults).
        **detector_options: passed to the detector class (e.g. ``detector_path``, ``clip_path``).

    Detail columns: ``correct``, ``strict``, ``partial`` (always all three), ``reason``,
    ``strict_reason``, ``tag`` and ``detections`` (JSON of the kept detections per class:
    ``[x0, y0, x1, y1, score, color]``).
    """

    name = "geneval"
    base_version = (
        "2"  # 2: the detector's identity (input scale) in the version; mask2former at the official scale
    )
    weight_files = (MASK2FORMER_WEIGHTS, CLIP_WEIGHTS)
    higher_is_better = True
    score_range = (0.0, 1.0)
    scale = (
        "GenEval: correct/strict are 0/1 per image (benchmark = mean of 6 task accuracies); partial in [0, 1]"
    )

    def __init__(
        self,
        backend: str = "mask2former",
        score: str = "correct",
        device: str | torch.device | None = None,
        threshold: float = 0.3,
        counting_threshold: float = 0.9,
        max_objects: int = 16,
        max_overlap: float = 1.0,
        position_threshold: float = 0.1,
        **detector_options: Any,
    ) -> None:
        if score not in SCORE_KINDS:
            raise ConfigError(f"geneval score={score!r} is not one of {list(SCORE_KINDS)}")
        self.options = GenEvalOptions.coerce(
            {
                "threshold": threshold,
                "counting_threshold": counting_threshold,
                "max_objects": max_objects,
                "max_overlap": max_overlap,
                "position_threshold": position_threshold,
            }
        )
        self.backend = DETECTOR_BACKENDS.canonical(backend)  # the name in the version: "mmdet", not "MMDet"
        self.score_kind = score
        cls = load_detector_class(self.backend)
        #: What the detector can find: clauses asking for anything else are refused.
        self.classes: tuple[str, ...] = tuple(getattr(cls, "classes", OBJECT_NAMES))
        self.colors: tuple[str, ...] = tuple(getattr(cls, "colors", COLORS))
        try:
            self.detector: Detector = cls(
                device=device, min_score=self.options.min_score(), **detector_options
            )
        except TypeError as exc:
            raise ConfigError(f"bad option for the GenEval {backend!r} detector: {exc}") from exc

    def version_suffix(self) -> str:
        """``-<backend>[-<detector identity>][-opt<digest>]-<score kind>``: a detector may name what
        changes its output (e.g. mask2former's input scale); non-default thresholds give other verdicts."""
        parts = [self.backend]
        identity = str(getattr(self.detector, "identity", "") or "")
        if identity:
            parts.append(identity)
        if self.options != GenEvalOptions():
            digest = hashlib.sha256(json.dumps(dataclasses.asdict(self.options), sort_keys=True).encode())
            parts.append(f"opt{digest.hexdigest()[:8]}")
        return "-" + "-".join([*parts, self.score_kind])

    @classmethod
    def required_weights(cls, options: Mapping[str, Any]) -> tuple[WeightFile, ...]:
        backend = options.get("backend", "mask2former")
        if backend == "mask2former":
            return (MASK2FORMER_WEIGHTS, CLIP_WEIGHTS)
        return (CLIP_WEIGHTS,) if backend == "mmdet" else ()  # mmdet: its own config + CLIP colours

    def check_metadata(self, metadata: Mapping[str, Any]) -> None:
        check_clauses(metadata, self.classes, self.colors)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        n = images.shape[0]
        for m in metadata:
            self.check_metadata(m)
        reasons = ["" if m.get("include") else NO_METADATA for m in metadata]
        todo = [i for i in range(n) if not reasons[i]]
        dets = self.detector(images[todo], [metadata[i] for i in todo]) if todo else []
        if len(dets) != len(todo):
            raise TdmError(
                f"GenEval detector {self.backend!r} returned {len(dets)} results for {len(todo)} images"
            )
        nan = math.nan
        cols: dict[str, list[Any]] = {k: [nan] * n for k in ("correct", "strict", "partial")} | {
            k: [""] * n for k in ("reason", "strict_reason", "detections")
        }
        tags = [str(m.get("tag", "")) for m in metadata]
        for i, image_dets in zip(todo, dets, strict=True):
            kept = filter_detections(image_dets, metadata[i].get("tag"), self.options)
            res = evaluate_filtered(metadata[i], kept, self.options)
            cols["correct"][i] = float(res.correct)
            cols["strict"][i] = float(res.strict)
            cols["partial"][i] = res.partial
            cols["reason"][i] = res.reason
            cols["strict_reason"][i] = res.strict_reason
            cols["detections"][i] = json.dumps(
                {
                    c: [
                        [round(float(v), 2) for v in d["box"]] + [round(float(d["score"]), 4), d.get("color")]
                        for d in ds
                    ]
                    for c, ds in kept.items()
                }
            )
        scores = torch.tensor(cols[self.score_kind], dtype=torch.float32)
        details: dict[str, Any] = {
            "correct": torch.tensor(cols["correct"], dtype=torch.float32),
            "strict": torch.tensor(cols["strict"], dtype=torch.float32),
            "partial": torch.tensor(cols["partial"], dtype=torch.float32),
            "reason": cols["reason"],
            "strict_reason": cols["strict_reason"],
            "tag": tags,
            "detections": cols["detections"],
            NAN_REASON: reasons,
        }
        return RewardOutput(scores, details)
