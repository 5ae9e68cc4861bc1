"""The GenEval rules over detections: pure, numpy only (the reward is :mod:`tdm_r1.rewards.geneval`).

:func:`evaluate` takes the prompt metadata and a list of detections and returns a
:class:`GenEvalResult` with three verdicts:

* ``correct`` - the **official GenEval rule** (GenEval, arXiv:2310.11513;
  djghosh13/geneval@af4902f ``evaluation/evaluate_images.py``): detections above
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
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tdm_r1.errors import ConfigError

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

Detection = dict[str, Any]


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
def _rule(
    include: list[dict[str, Any]],
    exclude: list[dict[str, Any]],
    objects: dict[str, list[Detection]],
    pos_thr: float,
    *,
    exact: bool,
) -> tuple[bool, list[str]]:
    """The official rule (``exact=False``) or the strict one (``exact=True``), with reasons.

    Official: the top-``count`` detections of each include clause must number ``count``; strict:
    *all* kept detections must (exactly ``count``). Either way, the colour must hold on every one
    of them and the position rule between them and the detections of the target clause. (On the
    top-``count`` detections, ">= count in the colour" and "all in the colour" are the same test.)
    """
    op = "==" if exact else ">="
    ok = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for j, req in enumerate(include):
        cls, count = str(req["class"]), int(req["count"])
        found = objects.get(cls, [])
        if not exact:
            found = found[:count]
        matched = True
        if len(found) != count:
            matched = False
            reasons.append(f"expected {cls}{op}{count}, found {len(found)}")
        else:
            if "color" in req:
                colors = _colors(found, cls)
                n_ok = colors.count(req["color"])
                if n_ok != count:
                    matched = False
                    reasons.append(
                        f"expected {req['color']} {cls}{op}{count}, found {n_ok} {req['color']}; and "
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
    correct, reasons = _rule(include, exclude, objects, opts.position_threshold, exact=False)
    strict, strict_reasons = _rule(include, exclude, objects, opts.position_threshold, exact=True)
    partial = partial_credit(metadata, objects, opts)
    return GenEvalResult(
        correct=correct,
        strict=strict,
        partial=float(partial),
        reason="\n".join(reasons),
        strict_reason="\n".join(strict_reasons),
    )
