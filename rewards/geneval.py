"""GenEval reward (``geneval``): the official GenEval rules over detector outputs.

The rule core is pure: :func:`evaluate` takes the prompt metadata and a list of detections and
returns a :class:`GenEvalResult` with three verdicts:

* ``correct`` - the **official GenEval rule** (djghosh13/geneval ``evaluation/evaluate_images.py``,
  described in ``../shared/reference/peers-and-rewards.md`` section 2): detections above
  confidence 0.3 (0.9 for the ``counting`` tag), sorted by confidence, at most 16 per class, NMS
  off; include clauses ANDed (the top-``count`` detections must number >= count; colour: at least
  ``count`` of them in the requested colour; position relative to include clause
  ``position[1]``), exclude clauses fail when >= ``count`` detections exist. This is the
  benchmark metric.
* ``strict`` - Flow-GRPO's ``strict_correct`` (reward-server ``evaluate_reward``): every include
  clause needs **exactly** ``count`` detections, every one of them in the requested colour, the
  position rule on all of them; plus (unlike Flow-GRPO, which skips them) the exclude clauses, so
  that ``strict`` implies ``correct``.
* ``partial`` - a dense training score in [0, 1], see :func:`partial_credit`.

A detection is ``{"class": str, "box": [x0, y0, x1, y1] (pixels), "score": float,
"color": str | None}``; ``color`` is the detector's colour label (one of :data:`COLORS`), needed
only for classes that an include clause asks a colour of.

The reward runs a detector backend, chosen by name through :data:`DETECTOR_BACKENDS`
(name -> ``"module:Class"``, imported on first use), and scores its detections. A detector class
is constructed as ``cls(device=..., min_score=..., **options)``, where ``min_score`` is the lowest
confidence the rules can use (a backend may drop detections below it) and ``options`` are the
user's ``--reward-option geneval.KEY=VALUE`` entries that are not GenEval options; it implements
the :class:`Detector` protocol. A new backend (e.g. the toy world's ``ShapeDetector`` in the
``shapes`` slot) takes ``**options`` and ignores or rejects what it does not use; the built-in
ones reject unknown options, which the reward reports as a ConfigError.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from tdm_r1.data import GENEVAL_TASKS  # one definition, re-exported here
from tdm_r1.errors import ConfigError, TdmError
from tdm_r1.registry import register_reward
from tdm_r1.rewards.base import NAN_REASON, Reward, RewardOutput
from tdm_r1.weights import WeightFile, declare

log = logging.getLogger(__name__)

#: The ten colours of GenEval's zero-shot colour classifier, in its order.
COLORS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
)

#: GenEval's 80 object names (COCO classes in the detector's label order, GenEval spelling).
OBJECT_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: Relations of :func:`relative_position`, in the order they are reported.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

#: Detector backend name -> "module:Class", imported on first use.
DETECTOR_BACKENDS: dict[str, str] = {
    "mask2former": "tdm_r1.rewards.geneval_mask2former:Mask2FormerDetector",
    "mmdet": "tdm_r1.rewards.geneval_mmdet:MmdetDetector",
    "shapes": "tdm_r1.toyworld.detector:ShapeDetector",
}

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

Detection = dict[str, Any]


class Detector(Protocol):
    """A GenEval detector backend.

    ``__call__(images (N,3,H,W) float in [0,1], metadata: N dicts) -> N lists of detections``,
    each ``{"class", "box" [x0,y0,x1,y1] pixels, "score", "color"}``. ``color`` must be set
    (one of :data:`COLORS`) for every detection of a class that an include clause of that image's
    metadata asks a colour of, at least for detections scoring above ``min_score`` (the 16 best
    per class suffice); it may be None elsewhere.
    """

    def __call__(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[list[Detection]]: ...


# ------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class GenEvalOptions:
    """GenEval's ``--options`` (defaults = the official values)."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0  # NMS IoU threshold; 1.0 disables NMS (official)
    position_threshold: float = 0.1

    @classmethod
    def coerce(cls, options: GenEvalOptions | Mapping[str, Any] | None) -> GenEvalOptions:
        if options is None:
            return cls()
        if isinstance(options, GenEvalOptions):
            return options
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ConfigError(f"unknown GenEval option(s) {unknown}; valid: {sorted(fields)}")
        kwargs: dict[str, Any] = {}
        for key, value in options.items():
            try:
                kwargs[key] = int(value) if key == "max_objects" else float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"GenEval option {key}={value!r} is not a number") from exc
        return cls(**kwargs)

    def min_score(self) -> float:
        return min(self.threshold, self.counting_threshold)


@dataclass(frozen=True)
class GenEvalResult:
    """Verdicts for one image. ``reason`` explains a failed official check, ``strict_reason`` a
    failed strict check (both "" when passed)."""

    correct: bool
    strict: bool
    partial: float
    reason: str
    strict_reason: str = ""


# --------------------------------------------------------------------------------- geometry
def compute_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU with GenEval's inclusive-pixel convention (``+1`` on widths and heights)."""

    def area(b: Sequence[float]) -> float:
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)

    inter = area(
        [max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])]
    )
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def relative_position(
    box_a: Sequence[float], box_b: Sequence[float], position_threshold: float = 0.1
) -> set[str]:
    """Relations of box A relative to box B (GenEval ``relative_position``).

    The centre offset A - B is shrunk per axis by ``position_threshold * (dim_A + dim_B)`` (never
    past 0), then divided by the norm of the *unshrunk* offset; "left of" if dx < -0.5, "right of"
    if dx > 0.5, "above" if dy < -0.5, "below" if dy > 0.5 (image y grows downwards). No relation
    when both shrunk components are below 1e-3 in magnitude.
    """
    a = np.asarray(box_a[:4], dtype=np.float64).reshape(2, 2)
    b = np.asarray(box_b[:4], dtype=np.float64).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    dims = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])
    revised = np.maximum(np.abs(offset) - position_threshold * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def _rels_text(rels: set[str]) -> str:
    return " and ".join(r for r in RELATIONS if r in rels)


# ------------------------------------------------------------------------------- filtering
def _check_detection(det: Mapping[str, Any]) -> None:
    missing = [k for k in ("class", "box", "score") if k not in det]
    if missing:
        raise ConfigError(
            f"GenEval detection {dict(det)!r} lacks {missing}; a detection is "
            '{"class": str, "box": [x0, y0, x1, y1], "score": float, "color": str | None}'
        )
    if len(det["box"]) != 4:
        raise ConfigError(f"GenEval detection box must be [x0, y0, x1, y1], got {det['box']!r}")


def filter_detections(
    detections: Iterable[Mapping[str, Any]],
    tag: str | None,
    options: GenEvalOptions | Mapping[str, Any] | None = None,
) -> dict[str, list[Detection]]:
    """Per class, the detections GenEval keeps: score > threshold (``counting_threshold`` for the
    counting tag), best first (a stable sort, so ties keep their input order), at most
    ``max_objects``, then greedy NMS at ``max_overlap`` (1.0 = off). Classes with none are absent.
    """
    opts = GenEvalOptions.coerce(options)
    thr = opts.counting_threshold if tag == "counting" else opts.threshold
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        _check_detection(det)
        if float(det["score"]) > thr:
            by_class.setdefault(str(det["class"]), []).append(dict(det))
    out: dict[str, list[Detection]] = {}
    for cls, dets in by_class.items():
        dets = sorted(dets, key=lambda d: -float(d["score"]))[: opts.max_objects]
        kept: list[Detection] = []
        while dets:
            best = dets.pop(0)
            kept.append(best)
            if opts.max_overlap < 1:
                dets = [d for d in dets if compute_iou(best["box"], d["box"]) < opts.max_overlap]
        out[cls] = kept
    return out


def _colors(dets: Sequence[Detection], classname: str) -> list[str]:
    colors = []
    for d in dets:
        color = d.get("color")
        if color is None:
            raise ConfigError(
                f"a detection of {classname!r} has no colour, but the prompt asks for one: the detector "
                "backend must classify the colour of every kept detection of a class with a colour clause"
            )
        colors.append(str(color))
    return colors


def _color_tally(colors: list[str]) -> str:
    known = [f"{colors.count(c)} {c}" for c in COLORS if c in colors]
    other = sorted({c for c in colors if c not in COLORS})
    return ", ".join(known + [f"{colors.count(c)} {c}" for c in other])


def _clauses(metadata: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    clauses = metadata.get(key) or []
    out = []
    for req in clauses:
        if "class" not in req or "count" not in req:
            raise ConfigError(f"GenEval {key} clause {req!r} needs 'class' and 'count'")
        if int(req["count"]) < 1:
            raise ConfigError(f"GenEval {key} clause {req!r}: count must be >= 1")
        out.append(dict(req))
    return out


def _position_target(req: Mapping[str, Any], index: int) -> tuple[str, int]:
    rel, target = req["position"]
    if rel not in RELATIONS:
        raise ConfigError(f"GenEval position {rel!r} is not one of {list(RELATIONS)}")
    if not 0 <= int(target) < index:
        raise ConfigError(
            f"GenEval include clause #{index} refers to clause #{target} for its position; it must refer "
            "to an earlier include clause"
        )
    return str(rel), int(target)


def check_clauses(
    metadata: Mapping[str, Any], classes: Sequence[str] = OBJECT_NAMES, colors: Sequence[str] = COLORS
) -> None:
    """Raise :class:`ConfigError` naming the clause and the valid values unless every ``include`` /
    ``exclude`` clause of ``metadata`` is well formed (a malformed one would otherwise score 0)."""
    for key in ("include", "exclude"):
        clauses = metadata.get(key)
        if clauses is None:
            continue
        if not isinstance(clauses, list):
            raise ConfigError(f"GenEval {key!r} must be a list of clauses, got {clauses!r}")
        for index, req in enumerate(clauses):
            if not isinstance(req, Mapping) or "class" not in req or "count" not in req:
                raise ConfigError(
                    f"GenEval {key} clause {req!r} must be an object with 'class' and 'count' "
                    '(e.g. {"class": "dog", "count": 2})'
                )
            if req["class"] not in classes:
                close = difflib.get_close_matches(str(req["class"]), list(classes), n=2)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ConfigError(
                    f"GenEval {key} clause {dict(req)!r}: unknown class {req['class']!r}.{hint} "
                    f"Valid classes: {', '.join(classes)}"
                )
            count = req["count"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigError(f"GenEval {key} clause {dict(req)!r}: count must be an integer >= 1")
            color = req.get("color")
            if color is not None and color not in colors:
                raise ConfigError(
                    f"GenEval {key} clause {dict(req)!r}: unknown colour {color!r}. Valid colours: "
                    f"{', '.join(colors)}"
                )
            position = req.get("position")
            if position is not None:
                if key != "include" or not isinstance(position, list | tuple) or len(position) != 2:
                    raise ConfigError(
                        f"GenEval {key} clause {dict(req)!r}: position must be [relation, earlier clause "
                        "index] in an include clause"
                    )
                if isinstance(position[1], bool) or not isinstance(position[1], int):
                    raise ConfigError(
                        f"GenEval {key} clause {dict(req)!r}: position index must be an integer"
                    )
                _position_target(req, index)


# ---------------------------------------------------------------------------------- rules
def _official(
    include: list[dict[str, Any]],
    exclude: list[dict[str, Any]],
    objects: dict[str, list[Detection]],
    pos_thr: float,
) -> tuple[bool, list[str]]:
    correct = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for j, req in enumerate(include):
        cls, count = str(req["class"]), int(req["count"])
        found = objects.get(cls, [])[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = _colors(found, cls)
                n_ok = colors.count(req["color"])
                if n_ok < count:
                    matched = False
                    reasons.append(
                        f"expected {req['color']} {cls}>={count}, found {n_ok} {req['color']}; and "
                        + _color_tally(colors)
                    )
            if "position" in req and matched:
                rel, target = _position_target(req, j)
                group = groups[target]
                if group is None:
                    matched = False
                    reasons.append(f"no target for {cls} to be {rel}")
                else:
                    matched, why = _position_holds(found, group, rel, cls, pos_thr)
                    if not matched:
                        reasons.append(why)
        groups.append(found if matched else None)
        correct = correct and matched
    for req in exclude:
        cls, count = str(req["class"]), int(req["count"])
        n = len(objects.get(cls, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {cls}<{count}, found {n}")
    return correct, reasons


def _position_holds(
    found: Sequence[Detection], group: Sequence[Detection], rel: str, cls: str, pos_thr: float
) -> tuple[bool, str]:
    """Every object of ``found`` must be ``rel`` every object of ``group`` (first failure reported)."""
    for a in found:
        for b in group:
            rels = relative_position(a["box"], b["box"], pos_thr)
            if rel not in rels:
                return False, f"expected {cls} {rel} target, found {_rels_text(rels)} target"
    return True, ""


def _strict(
    include: list[dict[str, Any]],
    exclude: list[dict[str, Any]],
    objects: dict[str, list[Detection]],
    pos_thr: float,
) -> tuple[bool, list[str]]:
    ok = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for j, req in enumerate(include):
        cls, count = str(req["class"]), int(req["count"])
        found = objects.get(cls, [])
        matched = True
        if len(found) != count:
            matched = False
            reasons.append(f"expected {cls}=={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = _colors(found, cls)
                n_ok = colors.count(req["color"])
                if n_ok != count:
                    matched = False
                    reasons.append(
                        f"expected {req['color']} {cls}=={count}, found {n_ok} {req['color']}; and "
                        + _color_tally(colors)
                    )
            if "position" in req and matched:
                rel, target = _position_target(req, j)
                group = groups[target]
                if group is None:
                    matched = False
                    reasons.append(f"no target for {cls} to be {rel}")
                else:
                    matched, why = _position_holds(found, group, rel, cls, pos_thr)
                    if not matched:
                        reasons.append(why)
        groups.append(found if matched else None)
        ok = ok and matched
    for req in exclude:
        cls, count = str(req["class"]), int(req["count"])
        n = len(objects.get(cls, []))
        if n >= count:
            ok = False
            reasons.append(f"expected {cls}<{count}, found {n}")
    return ok, reasons


def partial_credit(
    metadata: Mapping[str, Any], objects: dict[str, list[Detection]], options: GenEvalOptions | None = None
) -> float:
    """Dense GenEval training score in [0, 1] over *filtered* detections (see :func:`filter_detections`).

    Definition. Let ``n_c`` be the number of kept detections of class ``c``. Each include clause
    (class c, count k) earns the mean of its applicable parts:

    * count: ``max(0, 1 - |k - n_c| / k)``;
    * colour (if requested): ``min(k, #kept detections of c in that colour) / k``;
    * position (if requested, relative to clause ``t`` with class c_t, count k_t): 1 if
      ``n_c >= k``, ``n_{c_t} >= k_t`` and the official position rule holds between the top-k
      detections of c and the top-k_t detections of c_t, else 0.

    Each exclude clause (class e, count m) adds a 0/1 term (1 = fewer than m kept), except when an
    include clause of the same class has count < m: that exclude only forbids "more than the
    requested count", which the count part already penalises (GenEval's counting prompts, exclude
    = N+1). The score is the mean of all terms (1.0 for metadata without clauses). For GenEval
    metadata, ``partial == 1`` exactly when ``strict`` holds.

    Differences from Flow-GRPO's ``score`` (reward-server ``evaluate_reward``), on purpose:

    * theirs uses ``1 - |k - n|/k`` unclamped, which goes negative when far too many objects are
      found (k=1, n=3 gives -1); here each part is in [0, 1];
    * theirs appends an unconditional 1.0 after the position loop, so a failed position check adds
      both 0.0 and 1.0; here position is a single 0/1 part;
    * theirs adds 0.0 for colour/position when the count is wrong and skips them otherwise when an
      earlier clause failed; here colour and position are always scored on what was detected
      (colour on all kept detections of the class, position on the top-k of both classes);
    * theirs averages all appended terms flat (clauses with more parts weigh more); here parts are
      averaged per clause, then clauses (and exclude terms) are averaged;
    * theirs ignores exclude clauses; here independent excludes count.
    """
    opts = options or GenEvalOptions()
    include = _clauses(metadata, "include")
    exclude = _clauses(metadata, "exclude")
    terms: list[float] = []
    for j, req in enumerate(include):
        cls, k = str(req["class"]), int(req["count"])
        dets = objects.get(cls, [])
        parts = [max(0.0, 1.0 - abs(k - len(dets)) / k)]
        if "color" in req:
            n_col = _colors(dets, cls).count(req["color"])
            parts.append(min(k, n_col) / k)
        if "position" in req:
            rel, target = _position_target(req, j)
            t_req = include[target]
            t_cls, t_k = str(t_req["class"]), int(t_req["count"])
            a, b = dets[:k], objects.get(t_cls, [])[:t_k]
            ok = len(a) >= k and len(b) >= t_k and _position_holds(a, b, rel, cls, opts.position_threshold)[0]
            parts.append(1.0 if ok else 0.0)
        terms.append(sum(parts) / len(parts))
    for req in exclude:
        cls, m = str(req["class"]), int(req["count"])
        if any(str(r["class"]) == cls and int(r["count"]) < m for r in include):
            continue
        terms.append(0.0 if len(objects.get(cls, [])) >= m else 1.0)
    return sum(terms) / len(terms) if terms else 1.0


def evaluate(
    metadata: Mapping[str, Any],
    detections: Iterable[Mapping[str, Any]],
    *,
    options: GenEvalOptions | Mapping[str, Any] | None = None,
) -> GenEvalResult:
    """Apply the GenEval rules (official, strict, partial) to one image's raw detections.

    ``detections`` are unfiltered: this function applies the confidence threshold (by ``tag``),
    the ordering, the per-class cap and NMS itself. Reasons use GenEval's wording, one per line.
    """
    opts = GenEvalOptions.coerce(options)
    return evaluate_filtered(metadata, filter_detections(detections, metadata.get("tag"), opts), opts)


def evaluate_filtered(
    metadata: Mapping[str, Any], objects: dict[str, list[Detection]], opts: GenEvalOptions
) -> GenEvalResult:
    """:func:`evaluate` on detections already passed through :func:`filter_detections`."""
    include = _clauses(metadata, "include")
    exclude = _clauses(metadata, "exclude")
    correct, reasons = _official(include, exclude, objects, opts.position_threshold)
    strict, strict_reasons = _strict(include, exclude, objects, opts.position_threshold)
    partial = partial_credit(metadata, objects, opts)
    return GenEvalResult(
        correct=correct,
        strict=strict,
        partial=float(partial),
        reason="\n".join(reasons),
        strict_reason="\n".join(strict_reasons),
    )


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
    if backend not in DETECTOR_BACKENDS:
        raise ConfigError(
            f"unknown GenEval detector backend {backend!r}; choose one of {sorted(DETECTOR_BACKENDS)}"
        )
    module_name, _, attr = DETECTOR_BACKENDS[backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise TdmError(
                f"GenEval detector backend {backend!r} lives in {module_name}, which is not part of this "
                f"installation ({exc}); choose one of {sorted(DETECTOR_BACKENDS)}"
            ) from exc
        raise
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise TdmError(f"GenEval detector backend {backend!r}: {module_name} has no class {attr}") from exc


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
    version = (
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
        self.backend = backend
        self.score_kind = score
        cls = load_detector_class(backend)
        #: What the detector can find: clauses asking for anything else are refused.
        self.classes: tuple[str, ...] = tuple(getattr(cls, "classes", OBJECT_NAMES))
        self.colors: tuple[str, ...] = tuple(getattr(cls, "colors", COLORS))
        try:
            self.detector: Detector = cls(
                device=device, min_score=self.options.min_score(), **detector_options
            )
        except TypeError as exc:
            raise ConfigError(f"bad option for the GenEval {backend!r} detector: {exc}") from exc
        # A detector may name what changes its output (e.g. mask2former's input scale).
        identity = str(getattr(self.detector, "identity", "") or "")
        if self.options != GenEvalOptions():  # other thresholds give other verdicts
            digest = hashlib.sha256(json.dumps(dataclasses.asdict(self.options), sort_keys=True).encode())
            identity += f"{'-' if identity else ''}opt{digest.hexdigest()[:8]}"
        self.version = f"2-{backend}-{identity + '-' if identity else ''}{score}"

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
