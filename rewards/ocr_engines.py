"""OCR engines behind one small interface, and the process-pool worker entry points.

Kept outside ``tdm_r1.rewards`` (whose package import pulls in torch) so that OCR worker
processes start quickly: a worker imports only this module, numpy and its OCR engine.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tdm_r1.data import sha256_of
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


#: Text detection settings of the ``rapidocr`` backend: PaddleOCR 2.x's ``det_limit_side_len`` /
#: ``det_limit_type`` defaults (Flow-GRPO's engine): an image whose longer side is at most 960 px is
#: detected at its own size (rounded to a multiple of 32), a larger one is scaled down to 960.
#: RapidOCR's own default (736, "min") scales every image *up* to a 736-px shorter side, so a 64-px
#: toy image was detected at 736x736: 130x the pixels and 96% of the reward's time. Clean renders
#: read the same either way; blurry generated ones do not always (results/perf/ocr.md).
RAPIDOCR_DET_DEFAULTS: dict[str, Any] = {"limit_side_len": 960, "limit_type": "max"}


@functools.lru_cache(maxsize=16)
def _file_identity(path: str) -> dict[str, str]:
    """``{"file": <name>, "sha256": <hex>}`` of a model file (hashed once per process)."""
    return {"file": Path(path).name, "sha256": sha256_of(Path(path))}


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RapidOcrEngine:
    """RapidOCR 3.x (PP-OCR det + rec ONNX models from its wheel) on onnxruntime, offline.

    Args:
        threads: onnxruntime intra-op threads (-1 = onnxruntime's default, all cores).
        text_score: lines scored below this are dropped (0.5 = PaddleOCR 2.x ``drop_score``).
        det_limit_side_len, det_limit_type: text detection input size rule (RapidOCR's
            ``Det.limit_side_len`` / ``Det.limit_type``); default :data:`RAPIDOCR_DET_DEFAULTS`.
    """

    def __init__(
        self,
        *,
        threads: int = -1,
        text_score: float = 0.5,
        det_limit_side_len: int = RAPIDOCR_DET_DEFAULTS["limit_side_len"],
        det_limit_type: str = RAPIDOCR_DET_DEFAULTS["limit_type"],
    ) -> None:
        purpose = "the OCR reward's rapidocr backend"
        require("onnxruntime", purpose=purpose)
        rapidocr = require("rapidocr", purpose=purpose)
        import cv2
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        if det_limit_type not in ("max", "min"):
            raise ConfigError(f"ocr det_limit_type must be 'max' or 'min', got {det_limit_type!r}")
        if int(det_limit_side_len) < 32:
            raise ConfigError(f"ocr det_limit_side_len must be >= 32, got {det_limit_side_len}")
        self._engine = rapidocr.RapidOCR(
            params={
                "Global.log_level": "error",  # it warns on every image without text otherwise
                "Global.use_cls": False,  # Flow-GRPO: use_angle_cls=False, cls=False
                "Global.text_score": float(text_score),
                "Det.limit_side_len": int(det_limit_side_len),
                "Det.limit_type": str(det_limit_type),
                "EngineConfig.onnxruntime.intra_op_num_threads": int(threads),
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads > 0 else -1,
            }
        )
        import rapidocr.main as rapid_main
        from rapidocr.inference_engine.onnxruntime.main import ONNXRuntimeError

        self.errors = (
            rapid_main.RapidOCRError,
            ONNXRuntimeError,
            cv2.error,
            ort_state.Fail,
            ort_state.InvalidArgument,
            ort_state.RuntimeException,
            RuntimeError,
            ValueError,
            IndexError,
        )

    def identity(self) -> dict[str, Any]:
        """What decides this engine's reads: package versions, model files (sha256), settings.

        Loads the detection and recognition models (RapidOCR loads them lazily otherwise).
        """
        cfg = self._engine.cfg
        models: dict[str, Any] = {}
        for task, load in (("det", self._engine._load_det_model), ("rec", self._engine._load_rec_model)):
            session = load().session.session  # rapidocr's OrtInferSession -> onnxruntime session
            models[task] = _file_identity(str(session._model_path))
        det, glob = cfg.Det, cfg.Global
        return {
            "engine": "rapidocr",
            "version": _package_version("rapidocr"),
            "onnxruntime": _package_version("onnxruntime"),
            "models": models,
            "det": {
                "limit_side_len": int(det.limit_side_len),
                "limit_type": str(det.limit_type),
                "thresh": float(det.thresh),
                "box_thresh": float(det.box_thresh),
                "unclip_ratio": float(det.unclip_ratio),
                "use_dilation": bool(det.use_dilation),
                "score_mode": str(det.score_mode),
            },
            "rec": {
                "img_shape": [int(v) for v in cfg.Rec.rec_img_shape],
                "batch_num": int(cfg.Rec.rec_batch_num),
            },
            "preprocess": {
                "min_side_len": float(glob.min_side_len),
                "max_side_len": float(glob.max_side_len),
                "vertical_padding": bool(glob.use_vertical_padding),
            },
            "use_cls": bool(glob.use_cls),
            "text_score": float(glob.text_score),
        }

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

    def identity(self) -> dict[str, Any]:
        """Package versions, model files (sha256) and detection settings of the PaddleOCR engine.

        Read from the engine's ``args`` (PaddleOCR 2.x keeps its parsed settings there); an
        injected engine without them is identified by its class name only.
        """
        args = getattr(self._engine, "args", None)
        identity: dict[str, Any] = {
            "engine": "paddleocr",
            "version": _package_version("paddleocr"),
            "paddlepaddle": _package_version("paddlepaddle"),
        }
        if args is None:
            identity["injected"] = type(self._engine).__name__
            return identity
        models: dict[str, Any] = {}
        for task in ("det", "rec"):
            folder = getattr(args, f"{task}_model_dir", None)
            files = sorted(Path(folder).glob("inference.pd*")) if folder else []
            models[task] = [_file_identity(str(f)) for f in files] or {"dir": str(folder)}
        identity["models"] = models
        identity["det"] = {
            "limit_side_len": getattr(args, "det_limit_side_len", None),
            "limit_type": getattr(args, "det_limit_type", None),
            "thresh": getattr(args, "det_db_thresh", None),
            "box_thresh": getattr(args, "det_db_box_thresh", None),
            "unclip_ratio": getattr(args, "det_db_unclip_ratio", None),
        }
        identity["text_score"] = getattr(args, "drop_score", None)
        return identity


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
