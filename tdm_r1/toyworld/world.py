"""The constants of the toy world: canvas, shape classes, colours, words, sizes.

The world is deliberately small so that a text-to-image flow model learns it on 2 CPU cores:
64x64 RGB images on a flat grey background, three shape classes, six of the ten GenEval colours
(chosen far apart in RGB so that an imperfect sample keeps its colour), and short words on a
white sign for the text-rendering task.
"""

from __future__ import annotations

IMAGE_SIZE = 64

#: Background grey levels are drawn uniformly from this range (inclusive).
BACKGROUND_RANGE = (140, 176)

#: Shape classes (GenEval "classes" of the toy world). Triangles point up.
CLASSES: tuple[str, ...] = ("circle", "square", "triangle")

#: A subset of the ten GenEval colours, as clear RGB values.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (245, 215, 25),
    "green": (25, 150, 45),
    "blue": (30, 70, 225),
    "purple": (145, 40, 185),
    "black": (20, 20, 20),
}

#: Words for the text-rendering task: three letters, upper case, no repeated shapes of letters
#: that OCR confuses easily (O/0, I/1).
WORDS: tuple[str, ...] = (
    "CAT", "DOG", "SUN", "MAP", "BUS", "CUP", "HAT", "KEY",
    "BED", "PEN", "BOX", "FAN", "JAR", "NET", "RUG", "VAN",
)  # fmt: skip

#: Object sizes (bounding-box side in pixels) by number of objects in the image.
SIZE_RANGE: dict[int, tuple[int, int]] = {1: (20, 30), 2: (18, 26), 3: (14, 19), 4: (13, 17)}

#: Text signs: width and height ranges (pixels) and the font size (DejaVu Sans Bold). Large
#: glyphs (about 14 px per letter, 3.5 latent pixels) so that a small model can draw them legibly.
SIGN_WIDTH = (54, 60)
SIGN_HEIGHT = (25, 30)
FONT_SIZE = 20

#: Minimum free gap between objects and from the image border (pixels).
GAP = 3
MARGIN = 2

#: GenEval number words.
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}

#: Relations and their GenEval wording.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


def plural(cls: str) -> str:
    return cls + "s"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
