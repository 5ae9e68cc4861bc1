"""Model weights: what each component needs, where it is found, and a fast, clear failure.

Resolution order for a :class:`WeightFile`: an explicit local path (CLI/config option) > the
environment variable named by the file > the Hugging Face cache (no network) > a hub download,
only when ``HF_HUB_OFFLINE`` is not set. Offline and absent, :class:`MissingWeightsError` names
the file, its size and the three ways to provide it, without any network wait.

Integrity: a file with a known published sha256 (``WeightFile.sha256``, a full hash or a published
prefix such as OpenMMLab's 8-hex file-name suffix) is hashed when it is resolved, wherever it came
from; a mismatch raises :class:`WeightHashError` naming the file, the expected and the found hash
and how to replace it, before any model is built from it. Setting
``TDMBENCH_ALLOW_UNPINNED_WEIGHTS=1`` turns the error into a warning (for one's own re-trained
weights, whose numbers are then not the published model's). Hub downloads use
``WeightFile.revision`` when one is known. ``tdmbench weights verify`` checks what is on disk.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tdm_r1.errors import MissingWeightsError, WeightHashError
from tdm_r1.paths import offline
from tdm_r1.registry import Registry

log = logging.getLogger(__name__)

ALLOW_UNPINNED_ENV = "TDMBENCH_ALLOW_UNPINNED_WEIGHTS"


@dataclass(frozen=True)
class WeightFile:
    """One weight file (``filename`` set) or a whole hub repository (``filename=None``).

    Attributes:
        key: stable id, ``<owner>.<part>`` (e.g. ``pickscore.model``).
        hub_id: Hugging Face repository id.
        filename: file inside the repository, or None for a ``save_pretrained`` folder.
        size: human-readable download size.
        env: environment variable that may point at a local copy.
        option: the reward/model option that takes a local path.
        description: what it is.
        patterns: for a repository (``filename=None``), the files it needs (glob patterns, e.g.
            ``("*.json", "*.txt", "*.safetensors")``), so that a download skips the other formats
            a hub repository carries (TF/Flax copies, open_clip checkpoints...); empty = everything.
        sha256: the published sha256 of the file (full, or a published prefix of >= 8 hex digits);
            None where no published hash is known.
        sha256_source: where that hash is published.
        revision: hub revision (commit) downloads are pinned to; None where none is known.
    """

    key: str
    hub_id: str
    filename: str | None
    size: str
    env: str
    option: str
    description: str
    patterns: tuple[str, ...] = ()
    sha256: str | None = None
    sha256_source: str = ""
    revision: str | None = None

    def __post_init__(self) -> None:
        # The message tells a user what to type: the option must be a full command-line flag.
        if not self.option.startswith("--"):
            raise ValueError(f"WeightFile {self.key}: option {self.option!r} must be a CLI flag (--...)")

    def how_to_provide(self) -> str:
        what = f"{self.hub_id}/{self.filename}" if self.filename else f"the folder of {self.hub_id}"
        return (
            f"pass {self.option}=PATH, or set {self.env}=PATH (PATH = a local copy of {what}), "
            f"or run `tdmbench weights download {self.key}` on a machine with internet access "
            f"(it fills the Hugging Face cache; ~{self.size})"
        )


#: Every declared weight file, by key. The modules that declare them (rewards, model presets) are
#: imported on the first lookup, so ``MANIFEST.get(key)`` and ``key in MANIFEST`` see them all.
MANIFEST: Registry[WeightFile] = Registry(
    "weight file",
    builtins=("tdm_r1.rewards", "tdm_r1.models.presets"),
    hint="(`tdmbench weights list` lists them.)",
)


def declare(*files: WeightFile) -> tuple[WeightFile, ...]:
    """Add ``files`` to :data:`MANIFEST` (called at import time by the modules that use them)."""
    for f in files:
        MANIFEST.add(f.key, f)
    return files


def resolve(wf: WeightFile, local: str | Path | None = None) -> Path:
    """Return a local path (file, or folder for ``filename=None``) for ``wf``.

    Raises :class:`MissingWeightsError` within seconds when offline and absent.
    """
    for candidate, origin in ((local, wf.option), (os.environ.get(wf.env), wf.env)):
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_dir() and wf.filename and (path / wf.filename).is_file():
                return check_sha256(wf, path / wf.filename)
            if path.exists():
                return check_sha256(wf, path)
            raise MissingWeightsError(f"{wf.description}: {origin}={candidate} does not exist")
    cached = _from_hf_cache(wf)
    if cached is not None:
        return check_sha256(wf, cached)
    if offline():
        raise MissingWeightsError(
            f"{wf.description} ({wf.key}) is not available offline: no local copy of "
            f"{wf.hub_id}{'/' + wf.filename if wf.filename else ''} and HF_HUB_OFFLINE=1. "
            f"To provide it: {wf.how_to_provide()}."
        )
    return check_sha256(wf, download(wf))


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 hex of a file (memoised per path, size and modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        from tdm_r1.data import sha256_of

        _HASHES[key] = sha256_of(path)
    return _HASHES[key]


def hash_mismatch(wf: WeightFile, path: Path) -> str | None:
    """``None`` when ``path`` matches the published hash of ``wf`` (or none is known), else the
    one-line explanation: file, expected and found hash, and how to replace it."""
    if not wf.sha256 or not path.is_file():
        return None
    found = file_sha256(path)
    if found.startswith(wf.sha256.lower()):
        return None
    expected = wf.sha256 if len(wf.sha256) == 64 else f"{wf.sha256}... (published prefix)"
    return (
        f"{wf.description}: {path} has sha256 {found}, but the published file ({wf.sha256_source or wf.hub_id}) "
        f"has sha256 {expected}; it is a different version or a corrupt download, and nothing is scored with "
        f"it. Replace it: delete it and run `tdmbench weights download {wf.key}`, or {wf.how_to_provide()} "
        f"with a copy whose sha256 matches. For your own re-trained weights set {ALLOW_UNPINNED_ENV}=1 "
        "(their numbers are then not the published model's)"
    )


def check_sha256(wf: WeightFile, path: Path) -> Path:
    """Return ``path`` if it matches the published hash of ``wf``; else raise :class:`WeightHashError`
    (a warning instead when ``$TDMBENCH_ALLOW_UNPINNED_WEIGHTS`` is set)."""
    problem = hash_mismatch(wf, path)
    if problem is None:
        return path
    if os.environ.get(ALLOW_UNPINNED_ENV, "").strip().lower() in {"1", "true", "yes"}:
        log.warning("%s (allowed by %s)", problem.split("; it is")[0], ALLOW_UNPINNED_ENV)
        return path
    raise WeightHashError(problem)


def local_copy(wf: WeightFile) -> Path | None:
    """Where ``wf`` is on disk (environment variable, then the Hugging Face cache), never downloading."""
    env = os.environ.get(wf.env)
    if env:
        path = Path(env).expanduser()
        if path.is_dir() and wf.filename and (path / wf.filename).is_file():
            return path / wf.filename
        return path if path.exists() else None
    return _from_hf_cache(wf)


def verify(wf: WeightFile) -> tuple[str, str]:
    """``(state, text)`` of what is on disk for ``wf``: state ``missing``, ``ok``, ``unpinned``
    (present, no published hash to check) or ``mismatch``; never touches the network."""
    path = local_copy(wf)
    if path is None:
        return "missing", "not on disk (environment variable unset, not in the Hugging Face cache)"
    if not wf.sha256:
        return "unpinned", f"{path}: present; no published sha256 to check against"
    if not path.is_file():
        return "mismatch", f"{path} is not a file"
    problem = hash_mismatch(wf, path)
    if problem is not None:
        return "mismatch", problem
    return "ok", f"{path}: sha256 {file_sha256(path)} matches the published hash"


def _from_hf_cache(wf: WeightFile) -> Path | None:
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    if wf.filename:
        hit = try_to_load_from_cache(wf.hub_id, wf.filename, revision=wf.revision)
        return Path(hit) if isinstance(hit, str) else None
    try:
        return Path(
            snapshot_download(
                wf.hub_id, revision=wf.revision, local_files_only=True, allow_patterns=_patterns(wf)
            )
        )
    except (OSError, ValueError):  # LocalEntryNotFoundError and friends: "not cached"
        return None


def _patterns(wf: WeightFile) -> list[str] | None:
    return list(wf.patterns) if wf.patterns else None


def download(wf: WeightFile) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if wf.filename:
            return Path(hf_hub_download(wf.hub_id, wf.filename, revision=wf.revision, etag_timeout=5))
        return Path(
            snapshot_download(wf.hub_id, revision=wf.revision, etag_timeout=5, allow_patterns=_patterns(wf))
        )
    except OSError as exc:
        raise MissingWeightsError(
            f"{wf.description} ({wf.key}) could not be downloaded from {wf.hub_id}: {exc}. "
            f"To provide it: {wf.how_to_provide()}."
        ) from exc


def status(wf: WeightFile) -> str:
    """ "local" (env var), "cached" (HF cache) or "missing"; never touches the network."""
    env = os.environ.get(wf.env)
    if env and Path(env).expanduser().exists():
        return "local"
    return "cached" if _from_hf_cache(wf) is not None else "missing"
