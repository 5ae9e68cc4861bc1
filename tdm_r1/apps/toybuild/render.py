"""Ground-truth renders of toy prompts: the teacher's training data.

Objects are drawn with 4x supersampling (anti-aliased edges), never overlap (gap >= GAP px),
and satisfy the prompt's GenEval metadata exactly: counts, colours, and relative positions under
the GenEval position rule (so a perfect detector scores every render as correct).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tdm_r1.toyworld.world import (
    BACKGROUND_RANGE,
    CLASSES,
    COLORS,
    FONT_SIZE,
    GAP,
    IMAGE_SIZE,
    MARGIN,
    SIGN_HEIGHT,
    SIGN_WIDTH,
    SIZE_RANGE,
)

SUPERSAMPLE = 4
POSITION_THRESHOLD = 0.1


@dataclass(frozen=True)
class Placed:
    cls: str
    color: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive), pixels


def relations(box_a: tuple[float, ...], box_b: tuple[float, ...]) -> set[str]:
    """GenEval's relative position of A with respect to B (the reward's own rule, margin 0.1)."""
    from tdm_r1.rewards.geneval import relative_position

    return relative_position(box_a, box_b, POSITION_THRESHOLD)


def _jitter(box: tuple[float, ...]) -> list[tuple[float, ...]]:
    x0, y0, x1, y1 = box[:4]
    return [(x0, y0, x1, y1), (x0, y0, x1 + 1, y1 + 1), (x0 - 1, y0 - 1, x1, y1)]


def holds(rel: str, box_a: tuple[float, ...], box_b: tuple[float, ...]) -> bool:
    """``rel`` holds for A relative to B even with either box off by a pixel.

    Why: the detector measures boxes to half a pixel from anti-aliased edges, so a layout that
    satisfies the rule only on the drawn integer boxes can fail it on the detected ones.
    """
    return all(rel in relations(a, b) for a in _jitter(box_a) for b in _jitter(box_b))


def _overlaps(box: tuple[int, int, int, int], others: list[Placed]) -> bool:
    x0, y0, x1, y1 = box
    for o in others:
        ox0, oy0, ox1, oy1 = o.box
        if x0 < ox1 + GAP and ox0 < x1 + GAP and y0 < oy1 + GAP and oy0 < y1 + GAP:
            return True
    return False


def layout(meta: dict[str, Any], rng: np.random.Generator, *, tries: int = 400) -> list[Placed]:
    """Place the objects required by GenEval metadata ``meta`` (include clauses, exact counts)."""
    clauses = meta["include"]
    specs: list[tuple[int, str, str | None]] = []  # (clause index, class, colour)
    for ci, clause in enumerate(clauses):
        if clause["class"] not in CLASSES:
            raise ValueError(f"class {clause['class']!r} is not in the toy world ({', '.join(CLASSES)})")
        for _ in range(int(clause["count"])):
            specs.append((ci, clause["class"], clause.get("color")))
    n = len(specs)
    lo, hi = SIZE_RANGE[min(n, max(SIZE_RANGE))]
    palette = list(COLORS)
    for _attempt in range(200):
        placed: list[Placed] = []
        owner: list[int] = []
        for ci, cls, color in specs:
            size = int(rng.integers(lo, hi + 1))
            col = color if color is not None else palette[int(rng.integers(len(palette)))]
            position = clauses[ci].get("position")
            for _ in range(tries):
                x0 = int(rng.integers(MARGIN, IMAGE_SIZE - MARGIN - size + 1))
                y0 = int(rng.integers(MARGIN, IMAGE_SIZE - MARGIN - size + 1))
                box = (x0, y0, x0 + size, y0 + size)
                if _overlaps(box, placed):
                    continue
                if position is not None:
                    rel, ref = position
                    refs = [p.box for p, o in zip(placed, owner, strict=True) if o == ref]
                    if not all(holds(rel, box, b) for b in refs):
                        continue
                placed.append(Placed(cls, col, box))
                owner.append(ci)
                break
            else:
                break
        if len(placed) == n and _positions_ok(clauses, placed, owner):
            return placed
    raise RuntimeError(f"could not lay out {meta.get('prompt', meta)} after many attempts")


def _positions_ok(clauses: list[dict[str, Any]], placed: list[Placed], owner: list[int]) -> bool:
    for ci, clause in enumerate(clauses):
        if "position" not in clause:
            continue
        rel, ref = clause["position"]
        for a in (p for p, o in zip(placed, owner, strict=True) if o == ci):
            for b in (p for p, o in zip(placed, owner, strict=True) if o == ref):
                if not holds(rel, a.box, b.box):
                    return False
    return True


def _shape_polygon(cls: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    x0, y0, x1, y1 = box
    if cls == "triangle":
        return [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    return None


def draw_objects(objects: list[Placed], background: int) -> np.ndarray:
    s = SUPERSAMPLE
    im = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), (background,) * 3)
    d = ImageDraw.Draw(im)
    for o in objects:
        x0, y0, x1, y1 = (v * s for v in o.box)
        box = (x0, y0, x1 - 1, y1 - 1)
        fill = COLORS[o.color]
        if o.cls == "circle":
            d.ellipse(box, fill=fill)
        elif o.cls == "square":
            d.rectangle(box, fill=fill)
        else:
            d.polygon(_shape_polygon(o.cls, (x0, y0, x1, y1)), fill=fill)
    return np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    ):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)  # Pillow's bundled TrueType font (Aileron)


def draw_sign(word: str, rng: np.random.Generator, background: int) -> np.ndarray:
    """A white sign with ``word`` in black, random size and position."""
    s = SUPERSAMPLE
    w = int(rng.integers(SIGN_WIDTH[0], SIGN_WIDTH[1] + 1))
    h = int(rng.integers(SIGN_HEIGHT[0], SIGN_HEIGHT[1] + 1))
    x0 = int(rng.integers(MARGIN, IMAGE_SIZE - MARGIN - w + 1))
    y0 = int(rng.integers(MARGIN, IMAGE_SIZE - MARGIN - h + 1))
    im = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), (background,) * 3)
    d = ImageDraw.Draw(im)
    d.rectangle((x0 * s, y0 * s, (x0 + w) * s - 1, (y0 + h) * s - 1), fill=(250, 250, 250))
    d.text(
        ((x0 + w / 2) * s, (y0 + h / 2) * s), word, font=_font(FONT_SIZE * s), fill=(10, 10, 10), anchor="mm"
    )
    return np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX))


def render(meta: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, list[Placed]]:
    """Render one prompt -> ((64, 64, 3) uint8, placed objects)."""
    background = int(rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1))
    if meta.get("tag") == "text" or "target_text" in meta:
        return draw_sign(str(meta["target_text"]), rng, background), []
    objects = layout(meta, rng)
    return draw_objects(objects, background), objects


def render_batch(metas: list[dict[str, Any]], seed: int) -> np.ndarray:
    """Render a list of prompts -> (N, 64, 64, 3) uint8, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return np.stack([render(m, rng)[0] for m in metas])
