"""Rule-based detector of the toy world: the ``shapes`` backend of the ``geneval`` reward.

It returns detections in the GenEval format (``class``, ``box``, ``score``, ``color``) so that
the same GenEval rule code scores toy images and real ones.

RL optimises against this detector and will exploit any leniency, so it is strict by design:

* foreground = colour distance from the background (median of the border) > ``FG_THRESHOLD``,
  cleaned with a 2x2 opening, split into connected components;
* a component is an object only if it is large enough, roughly square in extent, of one
  colour (small spread around its median) close to a palette colour;
* its class is the best-matching ideal shape (circle, square, triangle) drawn in its box, and
  its confidence is that template IoU mapped linearly from ``IOU_ZERO`` (score 0) to
  ``IOU_ONE`` (score 1), so crisp shapes pass GenEval's 0.9 counting threshold and ragged
  blobs do not;
* an image whose rejected foreground exceeds ``MAX_STRAY`` of its area is "cluttered" and gets
  no detections at all (speckle, noise and fragmented blobs score 0 on every task).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from tdm_r1.toyworld.world import CLASSES, COLORS

log = logging.getLogger(__name__)

FG_THRESHOLD = 45.0
MIN_AREA = 40
MAX_ASPECT = 1.35
MAX_COLOR_DISTANCE = 90.0
MAX_COLOR_SPREAD = 40.0
IOU_ZERO = 0.70
IOU_ONE = 0.90
MAX_STRAY = 0.03

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], dtype=np.float32)


@lru_cache(maxsize=65536)
def template(cls: str, wh: int, ww: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """Coverage in [0, 1] of the ideal ``cls`` filling ``box`` (x0, y0, x1, y1) in a ``wh`` x ``ww`` window.

    4x4 supersampling per pixel; the triangle's apex is at the top centre.
    """
    s = 4
    ys = (np.arange(wh * s) + 0.5) / s
    xs = (np.arange(ww * s) + 0.5) / s
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    x0, y0, x1, y1 = box
    u = (xx - x0) / (x1 - x0)
    v = (yy - y0) / (y1 - y0)
    inbox = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if cls == "square":
        inside = inbox
    elif cls == "circle":
        inside = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    elif cls == "triangle":
        inside = inbox & (np.abs(u - 0.5) <= v / 2)
    else:
        raise ValueError(f"unknown toy class {cls!r}")
    return inside.reshape(wh, s, ww, s).mean(axis=(1, 3))


def _soft_iou(alpha: np.ndarray, cover: np.ndarray) -> float:
    union = np.maximum(alpha, cover).sum()
    return float(np.minimum(alpha, cover).sum() / union) if union > 0 else 0.0


def _fit(
    cls: str, alpha: np.ndarray, box: tuple[float, float, float, float]
) -> tuple[float, tuple[float, ...]]:
    """Best soft IoU of ``cls`` against coverage ``alpha`` over small moves of the box edges."""
    wh, ww = alpha.shape
    best_box = box
    best = _soft_iou(alpha, template(cls, wh, ww, box))
    for _ in range(6):
        improved = False
        for edge in range(4):
            for step in (-1.0, 1.0, -0.5, 0.5):
                cand = list(best_box)
                cand[edge] += step
                if cand[2] - cand[0] < 4 or cand[3] - cand[1] < 4:
                    continue
                c = tuple(cand)
                iou = _soft_iou(alpha, template(cls, wh, ww, c))
                if iou > best + 1e-6:
                    best, best_box, improved = iou, c, True
        if not improved:
            break
    return best, best_box


def _score(iou: float) -> float:
    return float(np.clip((iou - IOU_ZERO) / (IOU_ONE - IOU_ZERO), 0.0, 1.0))


def detect_image(image: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Detect shapes in one ``(H, W, 3)`` uint8 image.

    Returns:
        (detections, info): GenEval-format detections sorted by score, and diagnostics
        (``stray_fraction``, ``cluttered``, ``rejected`` reasons).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = np.median(border, axis=0)
    fg = np.linalg.norm(img - background, axis=2) > FG_THRESHOLD
    fg = ndimage.binary_opening(fg, structure=np.ones((2, 2), dtype=bool))
    labels, n = ndimage.label(fg)
    detections: list[dict[str, Any]] = []
    rejected: list[str] = []
    stray = 0
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == idx
        area = int(mask.sum())
        bh, bw = mask.shape
        why = None
        if area < MIN_AREA:
            why = "small"
        elif max(bh, bw) / min(bh, bw) > MAX_ASPECT:
            why = "aspect"
        else:
            # Colour from the most saturated half of the component (edges mix with the background).
            pix = img[sl][mask]
            far = np.linalg.norm(pix - background, axis=1)
            core = pix[far >= np.median(far)]
            med = np.median(core, axis=0)
            # Spread across the background->colour line: anti-aliasing moves along the line,
            # a second colour moves off it.
            direction = med - background
            unit = direction / max(float(np.linalg.norm(direction)), 1e-6)
            rel = pix - background
            resid = rel - np.outer(rel @ unit, unit)
            spread = float(np.mean(np.linalg.norm(resid, axis=1)))
            dist = np.linalg.norm(_PALETTE - med, axis=1)
            ci = int(np.argmin(dist))
            if spread > MAX_COLOR_SPREAD:
                why = "multicolour"
            elif dist[ci] > MAX_COLOR_DISTANCE:
                why = "off-palette"
            else:
                # Soft coverage of this colour over the background, inside the dilated component.
                y0, x0 = sl[0].start, sl[1].start
                wy0, wx0 = max(y0 - 1, 0), max(x0 - 1, 0)
                wy1, wx1 = min(y0 + bh + 1, h), min(x0 + bw + 1, w)
                near = ndimage.binary_dilation(labels[wy0:wy1, wx0:wx1] == idx)
                alpha = (img[wy0:wy1, wx0:wx1] - background) @ direction / float(direction @ direction)
                alpha = np.clip(alpha, 0.0, 1.0) * near
                box0 = (float(x0 - wx0), float(y0 - wy0), float(x0 - wx0 + bw), float(y0 - wy0 + bh))
                fits = {c: _fit(c, alpha, box0) for c in CLASSES}
                cls = max(fits, key=lambda c: fits[c][0])
                iou, fbox = fits[cls]
                score = _score(iou)
                if score <= 0.0:
                    why = "shape"
                else:
                    detections.append(
                        {
                            "class": cls,
                            "box": [fbox[0] + wx0, fbox[1] + wy0, fbox[2] + wx0, fbox[3] + wy0],
                            "score": score,
                            "color": _PALETTE_NAMES[ci],
                            "iou": iou,
                        }
                    )
        if why is not None:
            stray += area
            rejected.append(why)
    stray_fraction = stray / float(h * w)
    cluttered = stray_fraction > MAX_STRAY
    info = {"stray_fraction": stray_fraction, "cluttered": cluttered, "rejected": rejected, "components": n}
    if cluttered:
        return [], info
    detections.sort(key=lambda d: -d["score"])
    return detections, info


class ShapeDetector:
    """GenEval detector backend ``shapes`` for toy-world images (see the module docstring)."""

    name = "shapes"
    version = "1"
    #: The toy world's classes and colours (the GenEval reward refuses clauses asking for others).
    classes = CLASSES
    colors = tuple(COLORS)

    def __init__(self, device: Any = None, min_score: float = 0.0, **options: Any) -> None:
        """``device`` is accepted for the backend protocol and unused (the rules run on the CPU);
        detections scoring below ``min_score`` are dropped, as the other backends do."""
        if options:
            raise TypeError(f"the shapes detector takes no options, got {sorted(options)}")
        self.min_score = float(min_score)

    def __call__(
        self, images: Any, metadata: list[dict[str, Any]] | None = None
    ) -> list[list[dict[str, Any]]]:
        """images: (N,3,H,W) float in [0,1] (torch) or (N,H,W,3) uint8 numpy."""
        if isinstance(images, np.ndarray):
            arr = images
        else:
            from tdm_r1.images import to_uint8_nhwc

            arr = to_uint8_nhwc(images)
        return [[d for d in detect_image(a)[0] if d["score"] >= self.min_score] for a in arr]
