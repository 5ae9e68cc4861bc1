"""Rendered test images (PIL text signs) shared by the OCR and scoring tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def sign(word: str, size: int = 256, font_size: int = 40) -> Image.Image:
    """Black text centred on a white square (DejaVu Sans Bold, or Pillow's bundled font)."""
    im = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(im)
    font = (
        ImageFont.truetype(str(FONT), font_size) if FONT.is_file() else ImageFont.load_default(size=font_size)
    )
    width = draw.textlength(word, font=font)
    draw.text(((size - width) / 2, (size - font_size) / 2), word, fill="black", font=font)
    return im
