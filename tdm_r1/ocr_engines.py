"""OCR engines behind one small interface, and the process-pool worker entry points.

Kept outside ``tdm_r1.rewards`` (whose package import pulls in torch) so that OCR worker
processes start quickly: a worker imports only this module, numpy and its OCR engine.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from tdm_r1.deps import require
from tdm_r1.errors import ConfigError

log = logging.getLogger(__name__)

#: One recognised text line: (text, confidence).
Line = tuple[str, float]


class OcrEngine(Protocol):
    """An OCR engine: one RGB uint8 ``(H, W, 3)`` image -> recognised lines.

    ``errors`` lists the exception types that mean "the engine failed on this image" (scored 0,
    error kept); anything else propagates.
    """

    errors: tuple[type[BaseException], ...]

    def read(self, image: np.ndarray) -> list[Line]: ...


class RapidOcrEngine:
    """RapidOCR 3.x (PP-OCR det + rec ONNX models from its wheel) on onnxruntime, offline.

    Args:
        threads: onnxruntime intra-op threads (-1 = onnxruntime's default, all cores).
        text_score: lines scored below this are dropped (0.5 = PaddleOCR 2.x ``drop_score``).
    """

    def __init__(self, *, threads: int = -1, text_score: float = 0.5) -> None:
        purpose = "the OCR reward's rapidocr backend"
        require("onnxruntime", purpose=purpose)
        rapidocr = require("rapidocr", purpose=purpose)
        import cv2
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        self._engine = rapidocr.RapidOCR(
            params={
                "Global.log_level": "error",  # it warns on every image without text otherwise
                "Global.use_cls": False,  # Flow-GRPO: use_angle_cls=False, cls=False
                "Global.text_score": float(text_score),
                "EngineConfig.onnxruntime.intra_op_num_threads": int(threads),
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads > 0 else -1,
            }
        )
        import rapidocr.main as rapid_main

        self.errors = (
            rapid_main.RapidOCRError,
            cv2.error,
            ort_state.Fail,
            ort_state.InvalidArgument,
            ort_state.RuntimeException,
            RuntimeError,
            ValueError,
            IndexError,
        )

    def read(self, image: np.ndarray) -> list[Line]:
        # RapidOCR treats a numpy array as BGR (OpenCV convention).
        out = self._engine(np.ascontiguousarray(image[..., ::-1]))
        if out.txts is None or out.scores is None:
            return []
        return [(str(t), float(s)) for t, s in zip(out.txts, out.scores, strict=True)]


def parse_paddle_result(result: Any) -> list[Line]:
    """PaddleOCR 2.x ``.ocr(img, cls=False)`` output -> lines.

    The 2.x format is a list with one entry per input image; the entry is ``None`` (nothing
    detected) or a list of ``[box (4 points), (text, confidence)]``.
    """
    if not result or result[0] is None:
        return []
    lines: list[Line] = []
    for item in result[0]:
        _box, (text, conf) = item
        lines.append((str(text), float(conf)))
    return lines


class PaddleOcrEngine:
    """PaddleOCR 2.9.1 exactly as Flow-GRPO builds it (CPU, English, no angle classifier).

    The image goes in as the RGB array, as in Flow-GRPO (PaddleOCR expects BGR arrays; the paper's
    numbers were produced this way). ``engine`` injects a pre-built object with an
    ``.ocr(img, cls=False)`` method instead (tests, custom PaddleOCR settings).
    """

    def __init__(self, *, engine: Any | None = None) -> None:
        if engine is None:
            paddleocr = require("paddleocr", purpose="the OCR reward's paddleocr backend (paper parity)")
            engine = paddleocr.PaddleOCR(use_angle_cls=False, lang="en", use_gpu=False, show_log=False)
        self._engine = engine
        self.errors = (RuntimeError, ValueError, IndexError, KeyError, TypeError, OSError)

    def read(self, image: np.ndarray) -> list[Line]:
        return parse_paddle_result(self._engine.ocr(image, cls=False))


OCR_BACKENDS: dict[str, type] = {"rapidocr": RapidOcrEngine, "paddleocr": PaddleOcrEngine}


def make_engine(backend: str, **options: Any) -> OcrEngine:
    if backend not in OCR_BACKENDS:
        raise ConfigError(f"unknown OCR backend {backend!r}; choose one of {sorted(OCR_BACKENDS)}")
    return OCR_BACKENDS[backend](**options)


def read_image(engine: OcrEngine, image: np.ndarray) -> tuple[list[Line] | None, str]:
    """Run the engine on one image: ``(lines, "")`` or ``(None, "<error text>")`` on failure."""
    try:
        return engine.read(image), ""
    except engine.errors as exc:
        log.warning("OCR engine failed on an image (scored 0): %s: %s", type(exc).__name__, exc)
        return None, f"{type(exc).__name__}: {exc}"


# Process-pool workers: each builds its engine once (initializer) and keeps it in this global.
_WORKER_ENGINE: OcrEngine | None = None


def _init_worker(backend: str, options: dict[str, Any]) -> None:
    from tdm_r1.procs import die_with_parent

    global _WORKER_ENGINE
    die_with_parent()  # no orphaned workers after a SIGKILL of the main process
    _WORKER_ENGINE = make_engine(backend, **options)


def _worker_read(image: np.ndarray) -> tuple[list[Line] | None, str]:
    assert _WORKER_ENGINE is not None, "worker initializer did not run"
    return read_image(_WORKER_ENGINE, image)
