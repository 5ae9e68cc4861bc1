"""Content-addressed caches for generated images and reward scores.

Layout under ``<cache_dir()>/eval``::

    images/ab/<key>.png    the image (PNG, lossless)
    images/ab/<key>.json   its sha256 and what produced it (prompt, seed, model config hash)
    scores/ab/<key>.json   one reward's score, NaN reason and details for one image

Image key = sha256 of (sha256 of model config + sampler settings, prompt, seed). The sidecar records the
PNG's sha256; a PNG whose bytes no longer match (truncated, edited, disk error) is a miss, so the
image is generated again. Score key = sha256 of (image sha256, reward identity, reward options,
prompt, metadata): a regenerated image with the same bytes reuses its scores.

Every file is written atomically (temporary file in the same folder, then ``os.replace``), the
PNG before its sidecar: a process killed at any moment leaves either a complete entry or a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdm_r1.paths import cache_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- hashing, I/O
def _jsonable(obj: Any) -> Any:
    """Make tensors / numpy scalars / paths JSON-serialisable (used as ``json.dumps(default=)``)."""
    if hasattr(obj, "tolist"):  # torch.Tensor, numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def stable_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable, ensure_ascii=False)


def digest(obj: Any) -> str:
    """sha256 hex of the canonical JSON of ``obj``."""
    return hashlib.sha256(stable_json(obj).encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_MADE_DIRS: set[Path] = set()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    No fsync: this protects against killed processes, not against power loss.
    """
    if path.parent not in _MADE_DIRS:
        path.parent.mkdir(parents=True, exist_ok=True)
        _MADE_DIRS.add(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError:  # the folder was removed since we made it
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def eval_cache_root() -> Path:
    return cache_dir() / "eval"


# ------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class CachedImage:
    key: str
    sha256: str
    path: Path


class ImageCache:
    """Generated images keyed by :meth:`key`; entries are verified by sha256 on every read."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or eval_cache_root()) / "images"

    @staticmethod
    def model_identity(image_identity: dict[str, Any]) -> str:
        """sha256 of a model's image identity (``tdm_r1.models.identity``: weights, sampling, ...)."""
        return digest({"model": image_identity})

    @staticmethod
    def key(model_identity: str, prompt: str, seed: int) -> str:
        """Image key = sha256 of (:meth:`model_identity`, prompt, seed)."""
        return digest({"model": model_identity, "prompt": prompt, "seed": int(seed)})

    def png_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def _sidecar(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> CachedImage | None:
        """The verified entry, or ``None`` (missing, or corrupt: then the entry is deleted)."""
        png, side = self.png_path(key), self._sidecar(key)
        if not png.is_file() or not side.is_file():
            return None
        try:
            recorded = json.loads(side.read_text(encoding="utf-8"))["sha256"]
            actual = sha256_bytes(png.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("image cache entry %s is unreadable (%s); it will be regenerated", key[:12], exc)
            self._drop(key)
            return None
        if actual != recorded:
            log.warning(
                "image cache entry %s is corrupt (sha256 %s..., recorded %s...); it will be regenerated",
                key[:12],
                actual[:12],
                str(recorded)[:12],
            )
            self._drop(key)
            return None
        return CachedImage(key=key, sha256=actual, path=png)

    def put(self, key: str, png: bytes, info: dict[str, Any]) -> CachedImage:
        """Store PNG bytes (first) and the sidecar with their sha256 (second)."""
        sha = sha256_bytes(png)
        path = self.png_path(key)
        atomic_write_bytes(path, png)
        atomic_write_text(self._sidecar(key), stable_json({**info, "sha256": sha}))
        return CachedImage(key=key, sha256=sha, path=path)

    def load(self, entry: CachedImage) -> torch.Tensor:
        """(3, H, W) float32 in [0, 1]."""
        from tdm_r1.images import load_image

        return load_image(entry.path)[0]

    def _drop(self, key: str) -> None:
        self._sidecar(key).unlink(missing_ok=True)
        self.png_path(key).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class ScoreEntry:
    """One reward's verdict on one image. ``score`` is NaN when ``nan_reason`` says why."""

    score: float
    nan_reason: str
    details: dict[str, Any]
    reward_id: str
    reward_version: str

    def to_json(self) -> str:
        score = None if math.isnan(self.score) else self.score
        return stable_json(
            {
                "score": score,
                "nan_reason": self.nan_reason,
                "details": self.details,
                "reward_id": self.reward_id,
                "reward_version": self.reward_version,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ScoreEntry:
        obj = json.loads(text)
        score = float("nan") if obj["score"] is None else float(obj["score"])
        return cls(
            score=score,
            nan_reason=str(obj.get("nan_reason", "")),
            details=dict(obj.get("details", {})),
            reward_id=str(obj["reward_id"]),
            reward_version=str(obj["reward_version"]),
        )


class ScoreCache:
    """Reward scores keyed by :meth:`key`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or eval_cache_root()) / "scores"

    @staticmethod
    def key(
        image_sha256: str, reward: str, options: dict[str, Any], prompt: str, metadata: dict[str, Any]
    ) -> str:
        return digest(
            {
                "image": image_sha256,
                "reward": reward,
                "options": options,
                "prompt": prompt,
                "metadata": metadata,
            }
        )

    def path(self, key: str) -> Path:
        """Where the score of ``key`` is (or would be) stored."""
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ScoreEntry | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return ScoreEntry.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("score cache entry %s is unreadable (%s); it will be scored again", key[:12], exc)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, entry: ScoreEntry) -> None:
        atomic_write_text(self.path(key), entry.to_json())
