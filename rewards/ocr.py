"""OCR accuracy reward (``ocr``): the Flow-GRPO text-rendering rule, with a pluggable OCR engine.

Rule (Flow-GRPO, arXiv:2505.05470: yifan123/flow_grpo@ac4c86e ``flow_grpo/ocr.py``, restated here in
our own words, no code copied):

1. target = the text between the first two ASCII double quotes of the prompt
   (``metadata["target_text"]`` wins when given);
2. recognised = every OCR line with confidence > 0, concatenated with no separator;
3. both strings are lower-cased and every ASCII space is removed (nothing else is normalised);
4. d = 0 if the target is a substring of the recognised text, else Levenshtein(recognised, target);
5. d = min(d, len(target)); reward = 1 - d / len(target), in [0, 1].

An OCR engine failure on one image gives 0 (d = len(target)), as in Flow-GRPO; the error text is
kept in the ``error`` detail column. Where this module deliberately differs from Flow-GRPO:

* a prompt without a quoted span (Flow-GRPO: IndexError, the whole batch crashes) or with only an
  opening quote (Flow-GRPO: the rest of the prompt becomes the target) gives NaN with the reason
  "no quoted target";
* an empty target (after normalisation) gives NaN (Flow-GRPO: ZeroDivisionError).

Engines (``backend`` option): ``rapidocr`` (default; PP-OCR ONNX models shipped inside the
``rapidocr`` wheel, works offline) and ``paddleocr`` (PaddleOCR 2.9.1, Flow-GRPO's engine, for
parity with the paper). Both keep lines scored >= 0.5 (PaddleOCR 2.x ``drop_score`` and RapidOCR
``text_score`` both default to 0.5) and run without the angle classifier, as Flow-GRPO does.

Identity: the reward's ``version`` is ``2-<backend>-<engine version>-<hash>``, the hash covering the
engine's package versions, model files (names and sha256) and detection settings
(:meth:`OcrReward.engine_identity`), so caches and result rows tell engines apart; every row's
``engine`` detail names them in short. Flow-GRPO's published numbers come from PaddleOCR 2.9.1's
English models (``backend=paddleocr``); the default ``rapidocr`` backend runs other PP-OCR models.

The ``rapidocr`` backend detects text at the image's own size up to 960 px (PaddleOCR 2.x's
detection size rule, :data:`tdm_r1.rewards.ocr_engines.RAPIDOCR_DET_DEFAULTS`), not RapidOCR's default
upscaling to a 736-px shorter side: about 20x faster on 64-px toy images. Clean renders read the
same; on generated toy images a quarter of the reads differ either way (no detection size short of
736 keeps them all) with the same mean score within noise, see results/perf/ocr.md. The old rule
stays available: ``det_limit_side_len=736, det_limit_type=min``.

Images are read in parallel by a pool of ``workers`` processes (forkserver, or spawn where
forkserver is missing), each building its own engine once (:mod:`tdm_r1.rewards.ocr_engines`). As with any
spawned pool, a script that calls the reward with ``workers > 1`` must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from rapidfuzz.distance import Levenshtein

from tdm_r1.errors import ConfigError, TdmError
from tdm_r1.images import to_uint8_nhwc
from tdm_r1.registry import register_reward
from tdm_r1.rewards.base import NAN_REASON, Reward, RewardOutput
from tdm_r1.rewards.ocr_engines import (
    OCR_BACKENDS,
    RAPIDOCR_DET_DEFAULTS,
    Line,
    OcrEngine,
    PaddleOcrEngine,
    RapidOcrEngine,
    _init_worker,
    _worker_read,
    make_engine,
    parse_paddle_result,
    read_image,
)

log = logging.getLogger(__name__)

__all__ = [
    "OCR_BACKENDS",
    "Line",
    "OcrEngine",
    "OcrReward",
    "PaddleOcrEngine",
    "RapidOcrEngine",
    "extract_target",
    "make_engine",
    "ocr_match",
    "ocr_score",
    "parse_paddle_result",
    "read_image",
    "recognized_text",
]

NO_TARGET = "no quoted target"
EMPTY_TARGET = "empty quoted target"


# ------------------------------------------------------------------------------- pure core
def normalize(text: str) -> str:
    """Flow-GRPO normalisation: remove ASCII spaces, lower-case. Nothing else."""
    return text.replace(" ", "").lower()


def extract_target(prompt: str, metadata: dict[str, Any] | None = None) -> str | None:
    """The text to render: ``metadata["target_text"]`` if given, else the first ``"..."`` span.

    Returns None when the prompt has no complete double-quoted span (no quote, or only an
    opening one). The returned text is not normalised; an empty string means ``""`` was quoted.
    """
    if metadata is not None and metadata.get("target_text") is not None:
        return str(metadata["target_text"])
    start = prompt.find('"')
    if start < 0:
        return None
    end = prompt.find('"', start + 1)
    if end < 0:
        return None
    return prompt[start + 1 : end]


def recognized_text(lines: Sequence[Line]) -> str:
    """Concatenate the lines with confidence > 0, without separator (Flow-GRPO)."""
    return "".join(text for text, conf in lines if conf > 0)


def ocr_score(recognized: str, target: str) -> float:
    """Flow-GRPO OCR accuracy of ``recognized`` against ``target``, in [0, 1].

    ``1 - min(d, len(t)) / len(t)`` with ``d = 0`` when the normalised target is a substring of
    the normalised recognised text, else their Levenshtein distance. NaN when the normalised
    target is empty (nothing to read).
    """
    r, t = normalize(recognized), normalize(target)
    if not t:
        return math.nan
    d = 0 if t in r else Levenshtein.distance(r, t)
    d = min(d, len(t))
    return 1.0 - d / len(t)


@dataclass(frozen=True)
class OcrMatch:
    """All per-image OCR figures for one (recognised, target) pair."""

    score: float
    exact_match: int
    substring_match: int
    edit_similarity: float


def ocr_match(recognized: str, target: str) -> OcrMatch:
    """:func:`ocr_score` plus the separate components (UniRL PR #407 shows why they matter).

    ``edit_similarity = 1 - Levenshtein / max(len)`` of the normalised strings (1.0 when both are
    empty); ``exact_match`` and ``substring_match`` are 0/1 on the normalised strings.
    """
    r, t = normalize(recognized), normalize(target)
    return OcrMatch(
        score=ocr_score(recognized, target),
        exact_match=int(r == t),
        substring_match=int(bool(t) and t in r),
        edit_similarity=float(Levenshtein.normalized_similarity(r, t)),
    )


# -------------------------------------------------------------------------------- identity
def usable_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def engine_identity(engine: OcrEngine) -> dict[str, Any]:
    """The engine's identity dict (``identity()`` where the engine has one, else its class name)."""
    identity = getattr(engine, "identity", None)
    return identity() if callable(identity) else {"engine": type(engine).__name__, "version": "unknown"}


def identity_digest(identity: dict[str, Any]) -> str:
    """sha256 of the identity's canonical JSON (sorted keys)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def engine_label(identity: dict[str, Any]) -> str:
    """One-line summary: ``rapidocr 3.10.0; det PP-OCRv6_det_small.onnx@1a2b3c4d; ...; det 960/max``."""
    parts = [f"{identity.get('engine', '?')} {identity.get('version', '?')}"]
    for task, model in (identity.get("models") or {}).items():
        if isinstance(model, dict) and "file" in model:
            parts.append(f"{task} {model['file']}@{str(model.get('sha256', ''))[:8]}")
    det = identity.get("det")
    if isinstance(det, dict) and "limit_side_len" in det:
        parts.append(f"det size {det['limit_side_len']}/{det['limit_type']}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------- reward
@register_reward("ocr")
class OcrReward(Reward):
    """Flow-GRPO OCR accuracy (see the module docstring for the exact rule and differences).

    Args:
        backend: ``rapidocr`` (default, offline) or ``paddleocr`` (PaddleOCR 2.9.1, paper parity;
            ``pip install 'tdmbench[paddle]'``).
        workers: processes that read images in parallel (default: the cores this process may run
            on, ``os.sched_getaffinity``); 1 = serial, in this process. Each worker builds its own
            engine once and is reused across calls.
        text_score: RapidOCR's line-score floor (0.5, the PaddleOCR 2.x default).
        det_limit_side_len, det_limit_type: RapidOCR's text detection size rule (default 960,
            "max": no upscaling; RapidOCR's own default is 736, "min").
        threads: onnxruntime threads per engine (RapidOCR); default ``max(1, cores // workers)``,
            so that the engines together never oversubscribe the cores (1 with the default
            ``workers``). On a busy machine ``threads=1`` is much faster than many threads even
            with ``workers=1`` (onnxruntime's threads spin; see results/perf/rewards.md).

    Detail columns: ``recognized`` (raw concatenated text), ``target``, ``exact_match``,
    ``substring_match``, ``edit_similarity``, ``error`` (engine failure text, "" if none),
    ``engine`` (engine, version, model files with sha256 prefixes, detection settings).
    """

    name = "ocr"
    base_version = "2"  # an instance's version adds the engine identity (see version_suffix)
    higher_is_better = True
    score_range = (0.0, 1.0)
    scale = (
        "OCR accuracy 1 - min(d, len(target))/len(target), d = 0 if the target is a substring of the recognised "
        "text else their edit distance (lower-cased, ASCII spaces removed); in [0, 1]. Engine: rapidocr "
        "(PP-OCR ONNX models from the pinned rapidocr wheel) by default; Flow-GRPO's published numbers come "
        "from PaddleOCR 2.9.1 English models (backend=paddleocr)"
    )
    _start_method: ClassVar[str] = (
        "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    )

    def __init__(
        self,
        backend: str = "rapidocr",
        workers: int | None = None,
        text_score: float = 0.5,
        threads: int | None = None,
        det_limit_side_len: int = RAPIDOCR_DET_DEFAULTS["limit_side_len"],
        det_limit_type: str = RAPIDOCR_DET_DEFAULTS["limit_type"],
    ) -> None:
        if backend not in OCR_BACKENDS:
            raise ConfigError(f"unknown OCR backend {backend!r}; choose one of {sorted(OCR_BACKENDS)}")
        cores = usable_cores()
        workers = cores if workers is None else int(workers)
        if workers < 1:
            raise ConfigError(f"ocr workers must be >= 1, got {workers}")
        self.backend = backend
        self.workers = workers
        self.threads = max(1, cores // workers) if threads is None else int(threads)
        self._engine_options: dict[str, Any] = {}
        if backend == "rapidocr":
            self._engine_options["text_score"] = text_score
            self._engine_options["threads"] = self.threads
            self._engine_options["det_limit_side_len"] = int(det_limit_side_len)
            self._engine_options["det_limit_type"] = str(det_limit_type)
        # Built eagerly so that a missing package fails at construction, not at the first batch.
        self._engine: OcrEngine | None = make_engine(backend, **self._engine_options)
        self._pool: ProcessPoolExecutor | None = None
        self.engine_identity: dict[str, Any] = engine_identity(self._engine)
        self._engine_digest = identity_digest(self.engine_identity)[:12]
        self._engine_label = engine_label(self.engine_identity)

    # Picklable: the engine and the pool stay behind and are rebuilt on demand.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_engine"] = None
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def version_suffix(self) -> str:
        """``-<backend>-<engine version>-<digest of the engine identity>``: the engine's models
        and settings (see :func:`~tdm_r1.rewards.ocr_engines.engine_identity`) are part of the version."""
        return f"-{self.backend}-{self.engine_identity.get('version', 'unknown')}-{self._engine_digest}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": self.engine_identity}

    def close(self) -> None:
        """Shut the worker processes down (they are also stopped at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _get_engine(self) -> OcrEngine:
        if self._engine is None:
            self._engine = make_engine(self.backend, **self._engine_options)
        return self._engine

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            options = dict(self._engine_options)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(self._start_method),
                initializer=_init_worker,
                initargs=(self.backend, options),
            )
        return self._pool

    def read_all(self, images: Sequence[np.ndarray]) -> list[tuple[list[Line] | None, str]]:
        """OCR every RGB uint8 image: serial in-process, or across the worker pool."""
        if self.workers == 1 or len(images) < 2:
            engine = self._get_engine()
            return [read_image(engine, im) for im in images]
        try:
            return list(self._get_pool().map(_worker_read, images))
        except BrokenProcessPool as exc:
            self._pool = None
            raise TdmError(
                f"an OCR worker process died ({exc}); rerun with the reward option ocr.workers=1 to "
                "see the underlying error in this process. (Workers start with forkserver/spawn: a script "
                "that uses workers > 1 must guard its entry point with `if __name__ == '__main__':`.)"
            ) from exc

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        n = images.shape[0]
        targets = [extract_target(p, m) for p, m in zip(prompts, metadata, strict=True)]
        reasons = [""] * n
        for i, t in enumerate(targets):
            if t is None:
                reasons[i] = NO_TARGET
            elif not normalize(t):
                reasons[i] = EMPTY_TARGET
        todo = [i for i in range(n) if not reasons[i]]
        arrays = to_uint8_nhwc(images[todo]) if todo else np.zeros((0, 1, 1, 3), np.uint8)
        reads = dict(zip(todo, self.read_all(list(arrays)), strict=True))

        scores = torch.full((n,), math.nan, dtype=torch.float32)
        recognized, errors = [""] * n, [""] * n
        exact = torch.zeros(n, dtype=torch.float32)
        substring = torch.zeros(n, dtype=torch.float32)
        similarity = torch.full((n,), math.nan, dtype=torch.float32)
        for i in todo:
            lines, err = reads[i]
            target = targets[i]
            assert target is not None
            if lines is None:  # engine failure: d = len(target), as in Flow-GRPO
                errors[i] = err
                scores[i] = 0.0
                similarity[i] = 0.0
                continue
            text = recognized_text(lines)
            m = ocr_match(text, target)
            recognized[i] = text
            scores[i] = m.score
            exact[i] = m.exact_match
            substring[i] = m.substring_match
            similarity[i] = m.edit_similarity
        for i in range(n):
            if reasons[i]:
                exact[i] = math.nan
                substring[i] = math.nan
        details: dict[str, Any] = {
            "recognized": recognized,
            "target": ["" if t is None else t for t in targets],
            "exact_match": exact,
            "substring_match": substring,
            "edit_similarity": similarity,
            "error": errors,
            "engine": [self._engine_label] * n,
            NAN_REASON: reasons,
        }
        return RewardOutput(scores, details)
