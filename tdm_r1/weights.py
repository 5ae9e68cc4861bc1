"""Model weights: what each component needs, where it is found, and a fast, clear failure.

Resolution order for a :class:`WeightFile`: an explicit local path (CLI/config option) > the
environment variable named by the file > the Hugging Face cache (no network) > a hub download,
only when ``HF_HUB_OFFLINE`` is not set. Offline and absent, :class:`MissingWeightsError` names
the file, its size and the three ways to provide it, without any network wait.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tdm_r1.errors import MissingWeightsError
from tdm_r1.paths import offline


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
    """

    key: str
    hub_id: str
    filename: str | None
    size: str
    env: str
    option: str
    description: str
    patterns: tuple[str, ...] = ()

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


#: Every registered weight file, by key (filled by the modules that declare them).
MANIFEST: dict[str, WeightFile] = {}


def declare(*files: WeightFile) -> tuple[WeightFile, ...]:
    for f in files:
        MANIFEST[f.key] = f
    return files


def resolve(wf: WeightFile, local: str | Path | None = None) -> Path:
    """Return a local path (file, or folder for ``filename=None``) for ``wf``.

    Raises :class:`MissingWeightsError` within seconds when offline and absent.
    """
    for candidate, origin in ((local, wf.option), (os.environ.get(wf.env), wf.env)):
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_dir() and wf.filename and (path / wf.filename).is_file():
                return path / wf.filename
            if path.exists():
                return path
            raise MissingWeightsError(f"{wf.description}: {origin}={candidate} does not exist")
    cached = _from_hf_cache(wf)
    if cached is not None:
        return cached
    if offline():
        raise MissingWeightsError(
            f"{wf.description} ({wf.key}) is not available offline: no local copy of "
            f"{wf.hub_id}{'/' + wf.filename if wf.filename else ''} and HF_HUB_OFFLINE=1. "
            f"To provide it: {wf.how_to_provide()}."
        )
    return download(wf)


def _from_hf_cache(wf: WeightFile) -> Path | None:
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    if wf.filename:
        hit = try_to_load_from_cache(wf.hub_id, wf.filename)
        return Path(hit) if isinstance(hit, str) else None
    try:
        return Path(snapshot_download(wf.hub_id, local_files_only=True, allow_patterns=_patterns(wf)))
    except (OSError, ValueError):  # LocalEntryNotFoundError and friends: "not cached"
        return None


def _patterns(wf: WeightFile) -> list[str] | None:
    return list(wf.patterns) if wf.patterns else None


def download(wf: WeightFile) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if wf.filename:
            return Path(hf_hub_download(wf.hub_id, wf.filename, etag_timeout=5))
        return Path(snapshot_download(wf.hub_id, etag_timeout=5, allow_patterns=_patterns(wf)))
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
