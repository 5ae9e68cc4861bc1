"""Optional dependencies: import them on demand, or fail with the exact install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from tdm_r1.errors import MissingExtraError

#: import name -> (extra that provides it, pip package name)
KNOWN: dict[str, tuple[str, str]] = {
    "rapidocr": ("ocr", "rapidocr"),
    "onnxruntime": ("ocr", "onnxruntime"),
    "open_clip": ("clip", "open-clip-torch"),
    "torchvision": ("clip", "torchvision"),
    "paddleocr": ("paddle", "paddleocr==2.9.1"),
    "mmdet": ("mmdet", "mmdet"),
    "mmcv": ("mmdet", "mmcv==2.1.0"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "fastapi": ("label", "fastapi"),
    "uvicorn": ("label", "uvicorn"),
    "jinja2": ("label", "jinja2"),
    "httpx": ("label", "httpx"),
    "selenium": ("label", "selenium"),
}


def install_hint(module: str) -> str:
    extra, package = KNOWN.get(module, (None, module))
    if extra is None:
        return f"pip install {package}"
    hint = f"pip install 'tdmbench[{extra}]'  (or: pip install {package})"
    if extra == "mmdet":
        hint += "; mmcv must be compiled from source, see docs/geneval-mmdet.md"
    return hint


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the install command.

    Why not a plain import: users install tdmbench without heavy reward backends, and the first
    thing they need to know is the one command that fixes the problem.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the Python package '{module}', which is not importable ({exc}). "
            f"Install it with: {install_hint(module)}"
        ) from exc
