"""Where a model's weights are: a local folder, an environment variable, the Hugging Face cache.

Every miss fails fast offline (``HF_HUB_OFFLINE=1``) with an error that names the missing id and
how to point tdmbench at a local copy; nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tdm_r1 import weights
from tdm_r1.errors import MissingWeightsError
from tdm_r1.paths import offline
from tdm_r1.weights import WeightFile


def pipeline_weight_file(name: str, hub_id: str) -> WeightFile:
    """The weight declaration of model ``name``'s pipeline, derived from its name (env ``TDMBENCH_MODEL_<NAME>``)."""
    env = "TDMBENCH_MODEL_" + "".join(c if c.isalnum() else "_" for c in name.upper())
    return WeightFile(
        key=f"{name}.pipeline",
        hub_id=hub_id,
        filename=None,
        size="?",
        env=env,
        option="--model-path",
        description=f"diffusers pipeline of model {name!r}",
    )


def pipeline_source(name: str, hub_id: str, wf: WeightFile, model_path: str | Path | None = None) -> str:
    """A local folder for model ``name``'s pipeline, or ``hub_id`` when online downloads are allowed.

    Order: ``model_path`` > ``hub_id`` if it is a local folder > the file's environment variable >
    the Hugging Face cache. Offline (``HF_HUB_OFFLINE=1``) and absent, raises
    :class:`MissingWeightsError` at once, naming the id and how to point at a local copy.
    """
    for candidate, origin in ((model_path, "model path"), (os.environ.get(wf.env), wf.env)):
        if candidate:
            path = Path(candidate).expanduser()
            if not (path / "model_index.json").is_file():
                raise MissingWeightsError(
                    f"{origin}={candidate} is not a diffusers pipeline folder (no model_index.json). "
                    f"Point it at a local copy of {hub_id} (the folder `save_pretrained` writes)."
                )
            return str(path)
    local = Path(hub_id).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise MissingWeightsError(f"model {name!r}: {local} has no model_index.json")
        return str(local)
    if looks_like_path(hub_id):
        raise MissingWeightsError(
            f"model {name!r}: local pipeline folder {hub_id} does not exist "
            f"(set {wf.env}=PATH or pass --model-path PATH)"
        )
    cached = _hf_cached_snapshot(hub_id)
    if cached is not None:
        return cached
    if offline():
        raise MissingWeightsError(
            f"model {name!r} needs the diffusers pipeline {hub_id!r}, which is not in the "
            f"Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it. To use a local copy: pass "
            f"--model-path PATH (tdmbench generate/eval) or model_path=PATH to load(), or set "
            f"{wf.env}=PATH, where PATH is the pipeline folder (with model_index.json). Or download it on a "
            f"machine with internet access (huggingface-cli download {hub_id}; ~{wf.size})."
        )
    return hub_id


def lora_source(name: str, lora: WeightFile | str | None, lora_path: str | Path | None = None) -> Path | None:
    """Local path of model ``name``'s LoRA (file or folder), or None; ``lora_path`` wins over ``lora``."""
    if lora_path is not None:
        path = Path(lora_path).expanduser()
        if not path.exists():
            raise MissingWeightsError(f"model {name!r}: LoRA path {path} does not exist")
        return path
    if lora is None:
        return None
    if isinstance(lora, WeightFile):
        return weights.resolve(lora)
    path = Path(lora).expanduser()
    if not path.exists():
        raise MissingWeightsError(f"model {name!r}: LoRA path {path} does not exist")
    return path


def digest_path(path: Path) -> str:
    """sha256 (16 hex) over the weight files under ``path`` (names and contents)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        if f.suffix not in (".safetensors", ".bin", ".pt", ".ckpt", ".pth", ".json"):
            continue
        h.update(f.relative_to(path if path.is_dir() else path.parent).as_posix().encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def looks_like_path(text: str) -> bool:
    """Hub ids are ``owner/name``; anything else (``./x``, ``/abs``, ``~/x``, ``a/b/c``, ``x``) is a path."""
    return text.startswith((".", "/", "~")) or text.count("/") != 1


def _hf_cached_snapshot(hub_id: str) -> str | None:
    """The cached snapshot folder of a hub repository, or None (never touches the network)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(hub_id, local_files_only=True)
    except (OSError, ValueError):  # LocalEntryNotFoundError & co: "not cached"
        return None
    return path if (Path(path) / "model_index.json").is_file() else None
