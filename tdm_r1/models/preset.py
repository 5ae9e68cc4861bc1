"""Model presets: a registered, torch-free description of a model, and how to find one.

A :class:`ModelPreset` says which diffusers pipeline, which LoRA on top, and how it samples (one
:class:`~tdm_r1.models.spec.SamplingSpec`). It is torch-free, so ``tdmbench ls models`` stays
cheap. ``preset.load(device, dtype)`` builds the family's
:class:`~tdm_r1.models.adapter.FlowAdapter`. :func:`resolve_model` is the one way every command
finds a model (a name, a run folder, a preset file or a pipeline folder).

File format (``preset.json``, :meth:`ModelPreset.to_dict`): one flat JSON object whose sampling
fields (steps, guidance, shift, ...) sit beside the others; :meth:`ModelPreset.from_dict` also
reads them nested under ``"sampling"``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdm_r1.errors import ConfigError
from tdm_r1.models import locate
from tdm_r1.models.ema_layouts import layout_for
from tdm_r1.models.families import FAMILIES, adapter_class, check_options, family_of_pipeline
from tdm_r1.models.identity import image_identity
from tdm_r1.models.spec import SAMPLING_FIELDS, SamplingSpec
from tdm_r1.weights import WeightFile

if TYPE_CHECKING:
    from tdm_r1.models.adapter import FlowAdapter

__all__ = [
    "SD3_LORA_TARGETS",
    "Z_IMAGE_LORA_TARGETS",
    "ModelPreset",
    "SamplingSpec",
    "load_preset_file",
    "register_lora_preset",
    "register_preset",
    "resolve_model",
    "save_preset_file",
]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class ModelPreset:
    """A registered model: pipeline + optional LoRA + sampling defaults.

    Attributes:
        name: registry name (lowercase, kebab-case).
        family: adapter family, a name in ``tdm_r1.models.families.FAMILIES`` ("sd3", "z-image", ...).
        hub_id: Hugging Face id of a diffusers pipeline, or a local pipeline folder.
        sampling: how it samples by default (steps, guidance, shift, solver, spacing, resolution).
        kind: "base", "distilled", "rl" or "toy".
        lora: the LoRA loaded as role ``generator``: a :class:`~tdm_r1.weights.WeightFile`, a path, or None.
        lora_format: "tdm-ema" (``{"ema_parameters": [...]}`` list in parameter order) or "peft" (a saved role).
        lora_rank, lora_alpha, lora_targets: LoRA layout for "tdm-ema" files (targets None = family default).
        lora_scale: the LoRA's weight as diffusers' ``set_adapters(weights=...)`` applies it (output
            scaled by ``lora_scale * alpha / rank``); None = 1, ``alpha / rank`` as published.
        dtype: default dtype on accelerators ("bfloat16"); CPU loads default to float32.
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
    sampling: SamplingSpec
    kind: str = "base"
    lora: WeightFile | str | None = None
    lora_format: str | None = None
    lora_rank: int = 32
    lora_alpha: float = 64.0
    lora_targets: tuple[str, ...] | None = None
    lora_scale: float | None = None
    dtype: str = "bfloat16"
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
                f"model {self.name!r}: unknown family {self.family!r}; valid: {', '.join(FAMILIES.names())}"
            )
        if not isinstance(self.sampling, SamplingSpec):
            raise ConfigError(f"model {self.name!r}: sampling must be a SamplingSpec, got {self.sampling!r}")
        self.sampling.check(f"model {self.name!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"model {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.lora is not None and self.lora_format not in LORA_FORMATS:
            raise ConfigError(
                f"model {self.name!r}: lora_format must be one of {', '.join(LORA_FORMATS)}, got {self.lora_format!r}"
            )
        if self.lora_scale is not None and (self.lora is None or not math.isfinite(self.lora_scale)):
            raise ConfigError(
                f"model {self.name!r}: lora_scale={self.lora_scale!r} needs a LoRA and a finite number "
                "(None = the LoRA's alpha / rank as published)"
            )

    # -- what it costs ---------------------------------------------------------------------------
    @property
    def nfe(self) -> int:
        """Transformer passes per image (CFG doubles; zero-length scheduled steps cost nothing)."""
        return self.sampling.nfe

    def describe(self) -> dict[str, Any]:
        """One row of ``tdmbench ls models``."""
        lora = ""
        if isinstance(self.lora, WeightFile):
            lora = f"{self.lora.hub_id}/{self.lora.filename}"
        elif self.lora:
            lora = str(self.lora)
        s = self.sampling
        return {
            "family": self.family,
            "kind": self.kind,
            "nfe": self.nfe,
            "resolution": f"{s.width}x{s.height}",
            "steps": s.steps,
            "guidance": s.guidance,
            "solver": f"{s.solver} (shift {s.shift:g})",
            "weights": self.hub_id + (f" + {lora}" if lora else ""),
            "sources": self.sources,
        }

    # -- loading ---------------------------------------------------------------------------------
    def weight_file(self) -> WeightFile:
        """The pipeline's weight declaration (explicit ``model_file`` or one derived from the name)."""
        return self.model_file or locate.pipeline_weight_file(self.name, self.hub_id)

    def resolve_pipeline(self, model_path: str | Path | None = None) -> str:
        """A local folder for the pipeline, or the hub id when online downloads are allowed.

        See :func:`tdm_r1.models.locate.pipeline_source`; offline and absent, raises
        :class:`~tdm_r1.errors.MissingWeightsError` at once.
        """
        return locate.pipeline_source(self.name, self.hub_id, self.weight_file(), model_path)

    def resolve_lora(self, lora_path: str | Path | None = None) -> Path | None:
        """Local path of the LoRA (file or folder), or None; fails fast offline (see ``tdm_r1.weights``)."""
        return locate.lora_source(self.name, self.lora, lora_path)

    def with_overrides(self, **changes: Any) -> ModelPreset:
        """A copy with fields changed; sampling fields (steps, guidance, ...) change ``sampling``.

        Unknown names are errors.
        """
        names = {f.name for f in dataclasses.fields(self)} | set(SAMPLING_FIELDS)
        bad = sorted(set(changes) - names)
        if bad:
            raise ConfigError(f"unknown preset field(s) {bad}; valid: {sorted(names)}")
        sampling = {k: changes.pop(k) for k in SAMPLING_FIELDS if k in changes}
        if sampling:
            changes["sampling"] = dataclasses.replace(changes.get("sampling", self.sampling), **sampling)
        return dataclasses.replace(self, **changes)

    def load(self, device: Any = None, dtype: Any = None, **overrides: Any) -> FlowAdapter:
        """Build the adapter, load the pipeline (and the LoRA as role ``generator``).

        Args:
            device: torch device (default: ``tdm_r1.devices``: cuda if available, else cpu).
            dtype: torch dtype or name (default: ``self.dtype`` on accelerators, float32 on CPU).
            overrides: preset fields (steps, guidance, shift, solver, spacing, height, width,
                cfg_renorm, ...), ``model_path=`` / ``lora_path=`` local copies, and adapter options
                (``offload_text_encoders``, ``max_sequence_length``, ...).
        """
        field_names = {f.name for f in dataclasses.fields(self)} | set(SAMPLING_FIELDS)
        model_path = overrides.pop("model_path", None)
        lora_path = overrides.pop("lora_path", None)
        preset_changes = {k: overrides.pop(k) for k in list(overrides) if k in field_names}
        preset = self.with_overrides(**preset_changes) if preset_changes else self
        # resolve files first: an offline miss fails before torch/diffusers are imported
        source = preset.resolve_pipeline(model_path)
        lora = preset.resolve_lora(lora_path)
        cls = adapter_class(preset.family)
        options = {**preset.options, **overrides}
        check_options(cls, options)
        adapter = cls.from_pretrained(source, preset=preset, device=device, dtype=dtype, **options)
        if lora is not None:
            if preset.lora_format == "tdm-ema":
                adapter.roles.add(
                    "generator",
                    rank=preset.lora_rank,
                    alpha=preset.lora_alpha,
                    target_modules=preset.lora_targets,
                    init="gaussian",
                )
                adapter.roles.load_tdm_ema("generator", lora, layout=layout_for(preset.lora))
            else:
                adapter.roles.load("generator", lora)
            if preset.lora_scale is not None:
                adapter.roles.set_scale("generator", preset.lora_scale)
        return adapter

    def image_identity(self) -> dict[str, Any]:
        """What determines this model's images (weights digests, LoRA layout, dtype, options,
        sampling); the key of cached images and committed results. See :mod:`tdm_r1.models.identity`."""
        return image_identity(self)

    def config_dict(self) -> dict[str, Any]:
        """Every preset field, for provenance (``meta.json``), without loading any weights.

        The preset's fields plus a sha256 of the weight files that live in local folders (a
        retrained toy model or a new training checkpoint gets a new identity); hub ids stand
        for themselves.
        """
        data = self.to_dict()
        data.pop("sources", None)
        digests: dict[str, str | None] = {}
        for key, field_name, value in (("pipeline", "hub_id", self.hub_id), ("lora", "lora", self.lora)):
            if isinstance(value, str) and Path(value).expanduser().exists():
                digests[key] = locate.digest_path(Path(value).expanduser())
                # the content stands for a local folder, not where it lies: a result measured in one
                # checkout is recognised in another (committed results, another user's clone)
                data[field_name] = f"<local>/{Path(value).name}"
        data["weights_sha256"] = digests
        return data

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The flat JSON-able form (the ``preset.json`` format; sampling fields at the top level)."""
        out = dataclasses.asdict(self)
        out.update(out.pop("sampling"))
        for key in ("lora", "model_file"):
            value = getattr(self, key)
            if isinstance(value, WeightFile):
                out[key] = {"weight_file": dataclasses.asdict(value)}
        if self.lora_targets is not None:
            out["lora_targets"] = list(self.lora_targets)
        out["in_domain"] = list(self.in_domain)
        out["benchmarks"] = list(self.benchmarks)
        if self.lora_scale is None:  # as published: files and identities of presets without it unchanged
            out.pop("lora_scale")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: Path | None = None) -> ModelPreset:
        """Read :meth:`to_dict`'s form; the sampling fields may also be nested under ``"sampling"``."""
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)} | set(SAMPLING_FIELDS)
        bad = sorted(set(data) - names)
        if bad:
            raise ConfigError(f"unknown preset key(s) {bad}; valid: {sorted(names)}")
        sampling = dict(data.pop("sampling", None) or {})
        sampling.update({k: data.pop(k) for k in SAMPLING_FIELDS if k in data})
        try:
            data["sampling"] = SamplingSpec(**sampling)
        except TypeError as exc:  # a missing "steps" or an unknown nested key
            raise ConfigError(f"preset {data.get('name')!r}: bad sampling fields {sampling}: {exc}") from exc
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
                if isinstance(value, str) and locate.looks_like_path(value) and not Path(value).is_absolute():
                    data[key] = str((base_dir / value).resolve())
        return cls(**data)


# ----------------------------------------------------------------------------------- registration
def register_preset(preset: ModelPreset) -> ModelPreset:
    """Register ``preset`` in the model registry under ``preset.name`` (replacing an older entry)."""
    from tdm_r1.registry import register_model

    return register_model(preset.name)(preset)


def lora_preset(
    name: str,
    base: str | ModelPreset,
    lora_path: str | Path,
    *,
    lora_format: str = "peft",
    kind: str = "rl",
    sources: str = "",
    **changes: Any,
) -> ModelPreset:
    """A run's model: ``base`` (name or preset) + a saved LoRA (``FlowAdapter.save_role`` folder).

    ``changes`` override sampling fields (steps, guidance, ...). Nothing is registered: a run's
    model is found by its folder (``runs/<name>/final``) or by :func:`register_lora_preset`.
    """
    from tdm_r1.registry import MODELS

    base_preset = MODELS.get(base) if isinstance(base, str) else base
    return base_preset.with_overrides(
        name=name,
        lora=str(Path(lora_path).expanduser().resolve()),
        lora_format=lora_format,
        kind=kind,
        sources=sources or f"{base_preset.name} + LoRA {lora_path}",
        **changes,
    )


def register_lora_preset(
    name: str, base: str | ModelPreset, lora_path: str | Path, **kwargs: Any
) -> ModelPreset:
    """:func:`lora_preset`, registered under ``name`` (returns the registered preset)."""
    return register_preset(lora_preset(name, base, lora_path, **kwargs))


def save_preset_file(preset: ModelPreset, path: str | Path) -> Path:
    """Write ``preset`` as JSON (a run's ``preset.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = preset.to_dict()
    for key in ("hub_id", "lora"):  # keep a run folder relocatable: paths inside it become ./relative
        value = data.get(key)
        if isinstance(value, str) and locate.looks_like_path(value):
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
    try:
        family, sampling = family_of_pipeline(index.get("_class_name", "?"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    preset = ModelPreset(
        name=path.name.lower().replace(" ", "-"),
        family=family,
        hub_id=str(path),
        sampling=sampling,
        sources=f"local pipeline folder {path}",
    )
    return preset.with_overrides(**changes) if changes else preset


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
