"""Render the bundled sample images (examples/sample_images/) and their metadata.jsonl.

Small, deterministic PIL drawings for the README's interim demo::

    python examples/make_samples.py
    tdmbench score examples/sample_images --reward ocr \
        --metadata examples/sample_images/metadata.jsonl --out results/sample_scores.csv

Each row of metadata.jsonl carries the prompt and, in ``expected_ocr``, the OCR reward that the
default engine (RapidOCR) gives the image (checked by tests/rewards/test_sample_images.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent / "sample_images"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
SIZE = 256


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT), size) if FONT.is_file() else ImageFont.load_default(size=size)


def sign(word: str, background: str, ink: str, font_size: int = 40) -> Image.Image:
    """``word`` centred on a plain board inside a darker frame."""
    im = Image.new("RGB", (SIZE, SIZE), "#404040")
    draw = ImageDraw.Draw(im)
    draw.rectangle([16, 64, SIZE - 16, SIZE - 64], fill=background)
    f = font(font_size)
    width = draw.textlength(word, font=f)
    draw.text(((SIZE - width) / 2, (SIZE - font_size) / 2 - 4), word, fill=ink, font=f)
    return im


def gradient() -> Image.Image:
    im = Image.new("RGB", (SIZE, SIZE))
    im.putdata([(255 - y, 96 + x // 4, 64 + y // 2) for y in range(SIZE) for x in range(SIZE)])
    return im


SAMPLES: list[tuple[str, Image.Image | None, str, float | None]] = [
    ("open.png", None, 'a shop door with a sign that says "OPEN"', 1.0),
    ("cafe.png", None, 'a chalkboard outside a bar reading "Cafe"', 1.0),
    ("hello.png", None, 'fireworks spelling "Hello World" over a city', 0.5),
    ("typo.png", None, 'a laptop sticker with the word "tdmbench"', 0.875),
    ("blank.png", None, 'a red stop sign that says "STOP"', 0.0),
    ("sunset.png", None, "a calm sunset gradient without any text", None),
]


def render() -> None:
    images = {
        "open.png": sign("OPEN", "white", "black"),
        "cafe.png": sign("CAFE", "#1d3b2a", "white"),
        "hello.png": sign("HELLO", "#ffe680", "#202020"),
        "typo.png": sign("tdmbemch", "white", "#1030a0", font_size=34),
        "blank.png": Image.new("RGB", (SIZE, SIZE), "white"),
        "sunset.png": gradient(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, _, prompt, expected in SAMPLES:
        images[name].save(OUT / name, format="PNG", optimize=True)
        rows.append({"file": name, "prompt": prompt, "expected_ocr": expected})
    (OUT / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    render()
