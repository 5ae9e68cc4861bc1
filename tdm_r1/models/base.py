"""Model presets and the trainable flow-model interface.

A :class:`ModelPreset` is a registered, frozen description of a model: which diffusers pipeline,
which LoRA on top, and how it samples (steps, guidance, shift, solver). It is torch-free, so
``tdmbench ls models`` stays cheap. ``preset.load(device, dtype)`` builds the family's
:class:`FlowAdapter` (``tdm_r1.models.adapter``; re-exported here lazily, with
:class:`Conditioning`, so ``from tdm_r1.models.base import FlowAdapter`` works without importing
torch at module import time).

Guidance convention (every family): ``v = v_uncond + g * (v_cond - v_uncond)``; ``g = 1`` means no
CFG (one transformer pass). diffusers' ``ZImagePipeline`` writes ``pos + s * (pos - neg)``, i.e.
``s = g - 1``: Z-Image-Turbo's ``guidance_scale=0`` is ``guidance=1`` here.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdm_r1.errors import ConfigError, MissingWeightsError
from tdm_r1.paths import offline
from tdm_r1.schedule import SOLVERS, SPACINGS, count_passes
from tdm_r1.weights import WeightFile

if TYPE_CHECKING:
    from tdm_r1.models.adapter import Conditioning, FlowAdapter

__all__ = [
    "FAMILIES",
    "SD3_LORA_TARGETS",
    "Z_IMAGE_LORA_TARGETS",
    "Conditioning",
    "FlowAdapter",
    "ModelPreset",
    "load_preset_file",
    "register_family",
    "register_lora_preset",
    "register_preset",
    "resolve_model",
    "save_preset_file",
]

log = logging.getLogger(__name__)

#: family -> "module:Class" of its adapter (imported on ``load``).
FAMILIES: dict[str, str] = {
    "sd3": "tdm_r1.models.sd3:SD3Adapter",
    "z-image": "tdm_r1.models.z_image:ZImageAdapter",
}

#: ``model_index.json`` pipeline class -> family, for ``--model PATH``.
PIPELINE_FAMILIES: dict[str, str] = {
    "StableDiffusion3Pipeline": "sd3",
    "ZImagePipeline": "z-image",
}

LORA_FORMATS: tuple[str, ...] = ("tdm-ema", "peft")

#: The 8 attention projections of every SD3 joint block: the LoRA layout of TDM / TDM-R1 on
#: SD3.5-Medium (``train_tdmr1_pub.py``). peft matches suffixes, so ``attn.to_q`` does not wrap the
#: second attention ``attn2.to_q`` of SD3.5's dual-attention blocks.
SD3_LORA_TARGETS: tuple[str, ...] = (
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "attn.to_k",
    "attn.to_out.0",
    "attn.to_q",
    "attn.to_v",
)
#: Z-Image attention projections. TDM-R1's README also lists add_k_proj / add_v_proj, which do not
#: exist in Z-Image's single-stream blocks (peft wraps only matching modules: same result).
Z_IMAGE_LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
KINDS: tuple[str, ...] = ("base", "distilled", "rl", "toy")


def register_family(family: str, target: str) -> None:
    """Register an adapter class (``"module:Class"``) for a model family."""
    FAMILIES[family] = target


def __getattr__(name: str) -> Any:  # PEP 562: lazy re-export of the torch-based classes
    if name in ("FlowAdapter", "Conditioning", "SamplingSpec"):
        from tdm_r1.models import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ModelPreset:
    """A registered model: pipeline + optional LoRA + sampling defaults.

    Attributes:
        name: registry name (lowercase, kebab-case).
        family: adapter family, a key of :data:`FAMILIES` ("sd3", "z-image", ...).
        hub_id: Hugging Face id of a diffusers pipeline, or a local pipeline folder.
        steps: scheduled sampling steps.
        guidance: CFG scale in tdmbench's convention (1 = off; see the module docstring).
        shift: flow shift (Euler ``shift`` / DPM-Solver ``flow_shift``).
        solver: "euler" or "dpmsolver++".
        spacing: Euler sigma spacing: "flowmatch", "zero-terminal", "z-image" or "trailing" (see ``tdm_r1.sampling``).
        height, width: default resolution in pixels.
        kind: "base", "distilled", "rl" or "toy".
        lora: the LoRA loaded as role ``generator``: a :class:`~tdm_r1.weights.WeightFile`, a path, or None.
        lora_format: "tdm-ema" (``{"ema_parameters": [...]}`` list in parameter order) or "peft" (a saved role).
        lora_rank, lora_alpha, lora_targets: LoRA layout for "tdm-ema" files (targets None = family default).
        dtype: default dtype on accelerators ("bfloat16"); CPU loads default to float32.
        cfg_renorm: optional CFG norm cap (``ZImagePipeline(cfg_normalization=...)``).
        options: extra adapter keyword options (e.g. ``max_sequence_length``).
        model_file: weight declaration of the pipeline (environment variable, size, listing).
        sources: where the numbers come from (shown by ``tdmbench ls models``).
        few_step_base, baseline: leaderboard relations of an RL model: its few-step starting point
            and its many-step (100-NFE class) baseline (preset names).
        in_domain: reward names the model was RL-trained on (marked in the leaderboard).
        benchmarks: default benchmarks of ``tdmbench eval`` for this model.
    """

    name: str
    family: str
    hub_id: str
    steps: int
    guidance: float = 1.0
    shift: float = 3.0
    solver: str = "euler"
    spacing: str = "flowmatch"
    height: int = 512
    width: int = 512
    kind: str = "base"
    lora: WeightFile | str | None = None
    lora_format: str | None = None
    lora_rank: int = 32
    lora_alpha: float = 64.0
    lora_targets: tuple[str, ...] | None = None
    dtype: str = "bfloat16"
    cfg_renorm: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    model_file: WeightFile | None = None
    sources: str = ""
    few_step_base: str | None = None
    baseline: str | None = None
    in_domain: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(
                f"model {self.name!r}: unknown family {self.family!r}; valid: {', '.join(sorted(FAMILIES))}"
            )
        if self.solver not in SOLVERS:
            raise ConfigError(
                f"model {self.name!r}: unknown solver {self.solver!r}; valid: {', '.join(SOLVERS)}"
            )
        if self.spacing not in SPACINGS:
            raise ConfigError(
                f"model {self.name!r}: unknown spacing {self.spacing!r}; valid: {', '.join(SPACINGS)}"
            )
        if self.kind not in KINDS:
            raise ConfigError(f"model {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.lora is not None and self.lora_format not in LORA_FORMATS:
            raise ConfigError(
                f"model {self.name!r}: lora_format must be one of {', '.join(LORA_FORMATS)}, got {self.lora_format!r}"
            )
        if self.steps < 1 or self.height % 16 or self.width % 16:
            raise ConfigError(
                f"model {self.name!r}: steps must be >= 1 and height/width multiples of 16 "
                f"(got steps={self.steps}, {self.height}x{self.width})"
            )

    # -- what it costs ---------------------------------------------------------------------------
    @property
    def nfe(self) -> int:
        """Transformer passes per image (CFG doubles; zero-length scheduled steps cost nothing)."""
        passes = count_passes(self.steps, solver=self.solver, spacing=self.spacing)
        return passes * (2 if self.guidance != 1.0 else 1)

    def describe(self) -> dict[str, Any]:
        """One row of ``tdmbench ls models``."""
        lora = ""
        if isinstance(self.lora, WeightFile):
            lora = f"{self.lora.hub_id}/{self.lora.filename}"
        elif self.lora:
            lora = str(self.lora)
        return {
            "family": self.family,
            "kind": self.kind,
            "nfe": self.nfe,
            "resolution": f"{self.width}x{self.height}",
            "steps": self.steps,
            "guidance": self.guidance,
            "solver": f"{self.solver} (shift {self.shift:g})",
            "weights": self.hub_id + (f" + {lora}" if lora else ""),
            "sources": self.sources,
        }

    # -- loading ---------------------------------------------------------------------------------
    def weight_file(self) -> WeightFile:
        """The pipeline's weight declaration (explicit ``model_file`` or one derived from the name)."""
        if self.model_file is not None:
            return self.model_file
        env = "TDMBENCH_MODEL_" + "".join(c if c.isalnum() else "_" for c in self.name.upper())
        return WeightFile(
            key=f"{self.name}.pipeline",
            hub_id=self.hub_id,
            filename=None,
            size="?",
            env=env,
            option="--model-path",
            description=f"diffusers pipeline of model {self.name!r}",
        )

    def resolve_pipeline(self, model_path: str | Path | None = None) -> str:
        """A local folder for the pipeline, or the hub id when online downloads are allowed.

        Order: ``model_path`` > ``hub_id`` if it is a local folder > the file's environment variable >
        the Hugging Face cache. Offline (``HF_HUB_OFFLINE=1``) and absent, raises
        :class:`MissingWeightsError` at once, naming the id and how to point at a local copy.
        """
        wf = self.weight_file()
        for candidate, origin in ((model_path, "model path"), (os.environ.get(wf.env), wf.env)):
            if candidate:
                path = Path(candidate).expanduser()
                if not (path / "model_index.json").is_file():
                    raise MissingWeightsError(
                        f"{origin}={candidate} is not a diffusers pipeline folder (no model_index.json). "
                        f"Point it at a local copy of {self.hub_id} (the folder `save_pretrained` writes)."
                    )
                return str(path)
        local = Path(self.hub_id).expanduser()
        if local.is_dir():
            if not (local / "model_index.json").is_file():
                raise MissingWeightsError(f"model {self.name!r}: {local} has no model_index.json")
            return str(local)
        if _looks_like_path(self.hub_id):
            raise MissingWeightsError(
                f"model {self.name!r}: local pipeline folder {self.hub_id} does not exist "
                f"(set {wf.env}=PATH or pass --model-path PATH)"
            )
        cached = _hf_cached_snapshot(self.hub_id)
        if cached is not None:
            return cached
        if offline():
            raise MissingWeightsError(
                f"model {self.name!r} needs the diffusers pipeline {self.hub_id!r}, which is not in the "
                f"Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it. To use a local copy: pass "
                f"--model-path PATH (tdmbench generate/eval) or model_path=PATH to load(), or set "
                f"{wf.env}=PATH, where PATH is the pipeline folder (with model_index.json). Or download it on a "
                f"machine with internet access (huggingface-cli download {self.hub_id}; ~{wf.size})."
            )
        return self.hub_id

    def resolve_lora(self, lora_path: str | Path | None = None) -> Path | None:
        """Local path of the LoRA (file or folder), or None; fails fast offline (see ``tdm_r1.weights``)."""
        if lora_path is not None:
            path = Path(lora_path).expanduser()
            if not path.exists():
                raise MissingWeightsError(f"model {self.name!r}: LoRA path {path} does not exist")
            return path
        if self.lora is None:
            return None
        if isinstance(self.lora, WeightFile):
            from tdm_r1 import weights

            return weights.resolve(self.lora)
        path = Path(self.lora).expanduser()
        if not path.exists():
            raise MissingWeightsError(f"model {self.name!r}: LoRA path {path} does not exist")
        return path

    def with_overrides(self, **changes: Any) -> ModelPreset:
        """A copy with sampling fields changed (unknown names are errors)."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise ConfigError(f"unknown preset field(s) {bad}; valid: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def load(self, device: Any = None, dtype: Any = None, **overrides: Any) -> FlowAdapter:
        """Build the adapter, load the pipeline (and the LoRA as role ``generator``).

        Args:
            device: torch device (default: cuda if available, else cpu).
            dtype: torch dtype or name (default: ``self.dtype`` on accelerators, float32 on CPU).
            overrides: preset fields (steps, guidance, shift, solver, spacing, height, width,
                cfg_renorm, ...), ``model_path=`` / ``lora_path=`` local copies, and adapter options
                (``offload_text_encoders``, ``max_sequence_length``, ...).
        """
        field_names = {f.name for f in dataclasses.fields(self)}
        model_path = overrides.pop("model_path", None)
        lora_path = overrides.pop("lora_path", None)
        preset_changes = {k: overrides.pop(k) for k in list(overrides) if k in field_names}
        preset = self.with_overrides(**preset_changes) if preset_changes else self
        # resolve files first: an offline miss fails before torch/diffusers are imported
        source = preset.resolve_pipeline(model_path)
        lora = preset.resolve_lora(lora_path)
        module_name, _, cls_name = FAMILIES[preset.family].partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        options = {**preset.options, **overrides}
        _check_options(cls, options)
        adapter = cls.from_pretrained(source, preset=preset, device=device, dtype=dtype, **options)
        if lora is not None:
            if preset.lora_format == "tdm-ema":
                adapter.add_role(
                    "generator",
                    rank=preset.lora_rank,
                    alpha=preset.lora_alpha,
                    target_modules=preset.lora_targets,
                    init="gaussian",
                )
                adapter.load_tdm_ema("generator", lora)
            else:
                adapter.load_role("generator", lora)
        return adapter

    def config_dict(self) -> dict[str, Any]:
        """Identity for evaluation caches without loading any weights.

        The preset's fields plus a sha256 of the weight files that live in local folders (a
        retrained toy model or a new training checkpoint gets a new identity); hub ids stand
        for themselves.
        """
        data = self.to_dict()
        data.pop("sources", None)
        digests: dict[str, str | None] = {}
        for key, field_name, value in (("pipeline", "hub_id", self.hub_id), ("lora", "lora", self.lora)):
            if isinstance(value, str) and Path(value).expanduser().exists():
                digests[key] = _digest_path(Path(value).expanduser())
                # the content stands for a local folder, not where it lies: a result measured in one
                # checkout is recognised in another (committed results, another user's clone)
                data[field_name] = f"<local>/{Path(value).name}"
        data["weights_sha256"] = digests
        return data

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("lora", "model_file"):
            value = getattr(self, key)
            if isinstance(value, WeightFile):
                out[key] = {"weight_file": dataclasses.asdict(value)}
        if self.lora_targets is not None:
            out["lora_targets"] = list(self.lora_targets)
        out["in_domain"] = list(self.in_domain)
        out["benchmarks"] = list(self.benchmarks)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: Path | None = None) -> ModelPreset:
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(data) - names)
        if bad:
            raise ConfigError(f"unknown preset key(s) {bad}; valid: {sorted(names)}")
        for key in ("lora", "model_file"):
            value = data.get(key)
            if isinstance(value, dict) and "weight_file" in value:
                wf = dict(value["weight_file"])
                wf["patterns"] = tuple(wf.get("patterns", ()))  # JSON turns tuples into lists
                data[key] = WeightFile(**wf)
        if data.get("lora_targets") is not None:
            data["lora_targets"] = tuple(data["lora_targets"])
        for key in ("in_domain", "benchmarks"):
            if key in data:
                data[key] = tuple(data[key] or ())
        if base_dir is not None:  # paths in a preset file are relative to it
            for key in ("hub_id", "lora"):
                value = data.get(key)
                if isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
                    data[key] = str((base_dir / value).resolve())
        return cls(**data)


def _digest_path(path: Path) -> str:
    """sha256 (16 hex) over the weight files under ``path`` (names and contents)."""
    import hashlib

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


def _check_options(cls: type, options: dict[str, Any]) -> None:
    """Unknown adapter options are errors that list the valid ones (not a TypeError deep inside)."""
    import inspect

    valid: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            valid |= {
                name
                for name, p in inspect.signature(init).parameters.items()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name != "self"
            }
    valid -= {"transformer", "vae", "preset", "sampling", "device", "dtype", "scheduler_config"}
    valid -= {n for n in valid if n.startswith(("text_encoder", "tokenizer"))}
    bad = sorted(set(options) - valid)
    if bad:
        raise ConfigError(f"unknown option(s) {bad} for {cls.__name__}; valid: {sorted(valid)}")


def _looks_like_path(text: str) -> bool:
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


# ----------------------------------------------------------------------------------- registration
def register_preset(preset: ModelPreset) -> ModelPreset:
    """Register ``preset`` in the model registry under ``preset.name`` (replacing an older entry)."""
    from tdm_r1.registry import register_model

    return register_model(preset.name)(preset)


def register_lora_preset(
    name: str,
    base: str | ModelPreset,
    lora_path: str | Path,
    *,
    lora_format: str = "peft",
    kind: str = "rl",
    sources: str = "",
    **changes: Any,
) -> ModelPreset:
    """Register a run's model: ``base`` (name or preset) + a saved LoRA (``FlowAdapter.save_role`` folder).

    ``changes`` override sampling fields (steps, guidance, ...). Returns the registered preset.
    """
    from tdm_r1.registry import MODELS

    base_preset = MODELS.get(base) if isinstance(base, str) else base
    preset = dataclasses.replace(
        base_preset,
        name=name,
        lora=str(Path(lora_path).expanduser().resolve()),
        lora_format=lora_format,
        kind=kind,
        sources=sources or f"{base_preset.name} + LoRA {lora_path}",
        **changes,
    )
    return register_preset(preset)


def save_preset_file(preset: ModelPreset, path: str | Path) -> Path:
    """Write ``preset`` as JSON (a run's ``preset.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = preset.to_dict()
    for key in ("hub_id", "lora"):  # keep a run folder relocatable: paths inside it become ./relative
        value = data.get(key)
        if isinstance(value, str) and _looks_like_path(value):
            try:
                rel = Path(value).expanduser().resolve().relative_to(path.parent.resolve())
            except ValueError:
                continue
            data[key] = f"./{rel.as_posix()}"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_preset_file(path: str | Path) -> ModelPreset:
    """Read a preset JSON written by :func:`save_preset_file` (relative paths are relative to it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read preset file {path}: {exc}") from exc
    return ModelPreset.from_dict(data, base_dir=path.parent)


def preset_from_pipeline_folder(path: str | Path, **changes: Any) -> ModelPreset:
    """An ad-hoc preset for a local diffusers pipeline folder (family from ``model_index.json``)."""
    path = Path(path).expanduser().resolve()
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a diffusers pipeline folder: {exc}") from exc
    cls_name = index.get("_class_name", "?")
    family = PIPELINE_FAMILIES.get(cls_name)
    if family is None:
        raise ConfigError(
            f"{path}: pipeline class {cls_name!r} is not supported; supported: {', '.join(PIPELINE_FAMILIES)}"
        )
    defaults: dict[str, Any] = (
        dict(steps=28, guidance=4.5, shift=3.0)
        if family == "sd3"
        else dict(steps=9, guidance=1.0, shift=3.0, spacing="zero-terminal", height=1024, width=1024)
    )
    defaults.update(changes)
    return ModelPreset(
        name=path.name.lower().replace(" ", "-"),
        family=family,
        hub_id=str(path),
        kind=defaults.pop("kind", "base"),
        sources=f"local pipeline folder {path}",
        **defaults,
    )


def resolve_model(spec: str | Path) -> ModelPreset:
    """The one way every command finds a model (``generate``, ``eval``, training's ``--model``).

    In order: a preset JSON file (``runs/<run>/final/preset.json``), a run folder with
    ``preset.json`` (``runs/<run>/final``, or the run folder itself when its ``final/`` exists), a
    diffusers pipeline folder, a registered name, and last the name of a finished training run
    under ``$TDMBENCH_RUNS`` (a run registers its model only in the process that trained it).
    """
    from tdm_r1.paths import runs_dir
    from tdm_r1.registry import MODELS

    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".json":
            return load_preset_file(path)
        raise ConfigError(
            f"model {text!r} is a file but not a preset .json (e.g. runs/<name>/final/preset.json)"
        )
    if path.is_dir():
        for candidate in (path / "preset.json", path / "final" / "preset.json"):
            if candidate.is_file():
                return load_preset_file(candidate)
        if (path / "model_index.json").is_file():
            return preset_from_pipeline_folder(path)
        raise ConfigError(
            f"{path} is neither a run folder (preset.json, or final/preset.json for an unfinished or "
            "finished run) nor a pipeline folder (model_index.json)"
        )
    if text in MODELS:
        return MODELS.get(text)
    runs = runs_dir()
    own = runs / text / "final" / "preset.json"
    if own.is_file():
        return load_preset_file(own)
    if runs.is_dir() and "/" not in text:
        for candidate in sorted(runs.glob("*/final/preset.json")):
            try:
                name = json.loads(candidate.read_text(encoding="utf-8")).get("name")
            except (OSError, ValueError):
                continue
            if name == text:
                return load_preset_file(candidate)
    if "/" in text or text.endswith(".json"):
        raise ConfigError(
            f"model {text!r} looks like a path but does not exist; give a registered name "
            "(`tdmbench ls models`), a run folder (runs/<name>/final) or its preset.json"
        )
    return MODELS.get(text)
