"""Model families: which adapter class runs a preset, and which diffusers pipeline it wraps.

Torch-free: a family is registered as a ``"module:Class"`` target that is imported only when a
model of that family loads. Register a new family with :func:`register_family` (see
``tdm_r1.models.sd3`` for an adapter to copy from).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tdm_r1.errors import ConfigError
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.registry import Registry

if TYPE_CHECKING:
    import torch

#: family name -> its adapter class, registered as a lazy ``"module:Class"`` target (imported on
#: the first :func:`adapter_class`). Entry meta: ``pipeline`` (the diffusers ``model_index.json``
#: class name) and ``folder_sampling`` (sampling defaults of a bare pipeline folder).
FAMILIES: Registry[type] = Registry("model family")


@dataclass(frozen=True)
class TextTokens:
    """How a family turns a prompt into text tokens: the one source of its default prompt length.

    Attributes:
        max_sequence_length: the adapter's default ``max_sequence_length`` (SD3: T5 tokens; Z-Image:
            the Qwen3 token limit). Presets that state ``options.max_sequence_length`` override it.
        fixed: tokens placed before them whatever the length (SD3: the 77 CLIP tokens).
        padded: True when every prompt is padded to ``fixed + max_sequence_length`` tokens; False
            when only a prompt's real tokens are kept (Z-Image), so the length is an upper bound.
        encoder: what encodes the ``max_sequence_length`` part (shown in provenance and perf tables).
    """

    max_sequence_length: int
    fixed: int = 0
    padded: bool = True
    encoder: str = ""


def register_family(
    family: str,
    target: str,
    *,
    pipeline: str | None = None,
    folder_sampling: SamplingSpec | None = None,
    text: TextTokens | None = None,
) -> None:
    """Register an adapter class (``"module:Class"``) for ``family``.

    Args:
        pipeline: the diffusers pipeline class a local pipeline folder names in ``model_index.json``
            (lets ``--model PATH`` find the family).
        folder_sampling: sampling defaults for such a folder (no preset says how it samples).
        text: the family's prompt tokens (:class:`TextTokens`; the adapter's default length).
    """
    if target.count(":") != 1:
        raise ConfigError(f"family {family!r}: target must be 'module:Class', got {target!r}")
    FAMILIES.add_lazy(family, target, pipeline=pipeline, folder_sampling=folder_sampling, text=text)


def family_text(family: str) -> TextTokens:
    """The :class:`TextTokens` of ``family`` (its default prompt length)."""
    text = FAMILIES.meta(family).get("text")
    if text is None:
        raise ConfigError(
            f"model family {family!r} was registered without its text tokens (text=TextTokens(...))"
        )
    return text


def prompt_tokens(family: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Text tokens per prompt of a model of ``family`` with adapter ``options`` (a preset's).

    ``{"max_sequence_length", "fixed", "total", "padded", "encoder"}``: e.g. SD3 with the TDM-R1
    length 128 is 77 CLIP + 128 T5 = 205 tokens for every prompt; Z-Image keeps a prompt's real
    tokens only, up to 512. Recorded in provenance (the adapter's ``config_dict``) and perf tables.
    """
    text = family_text(family)
    length = (options or {}).get("max_sequence_length")
    length = text.max_sequence_length if length is None else int(length)
    return {
        "max_sequence_length": length,
        "fixed": text.fixed,
        "total": text.fixed + length,
        "padded": text.padded,
        "encoder": text.encoder,
    }


def adapter_class(family: str) -> type:
    """The adapter class of ``family`` (imports its module)."""
    return FAMILIES.get(family)


def family_of_pipeline(pipeline: str) -> tuple[str, SamplingSpec]:
    """``(family, folder sampling defaults)`` of a diffusers pipeline class name."""
    for name in FAMILIES.names():
        meta = FAMILIES.meta(name)
        if meta.get("pipeline") == pipeline:
            return name, meta["folder_sampling"]
    supported = [p for p in (FAMILIES.meta(n).get("pipeline") for n in FAMILIES.names()) if p]
    raise ConfigError(f"pipeline class {pipeline!r} is not supported; supported: {', '.join(supported)}")


#: ``FlowAdapter.__init__`` arguments that ``ModelPreset.load`` fills itself (not user options).
_INTERNAL = {"transformer", "vae", "preset", "sampling", "device", "dtype", "scheduler_config"}


def check_options(cls: type, options: dict[str, Any]) -> None:
    """Unknown adapter options are errors that list the valid ones (not a TypeError deep inside)."""
    valid: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            valid |= {
                name
                for name, p in inspect.signature(init).parameters.items()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name != "self"
            }
    valid -= _INTERNAL
    valid -= {n for n in valid if n.startswith(("text_encoder", "tokenizer"))}
    bad = sorted(set(options) - valid)
    if bad:
        raise ConfigError(f"unknown option(s) {bad} for {cls.__name__}; valid: {sorted(valid)}")


def pipeline_dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": ...}`` for diffusers versions that renamed ``torch_dtype`` (it warns), else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _builtin(family: str, target: str, pipeline: str, text: TextTokens, **sampling: Any) -> None:
    register_family(family, target, pipeline=pipeline, folder_sampling=SamplingSpec(**sampling), text=text)


#: SD3 / SD3.5 prompt: 77 CLIP tokens + 128 T5 tokens. 128 is what TDM-R1 encodes every prompt with
#: (Luo-Yihong/TDM-R1@cc55d89, scripts/train_tdmr1_pub.py: ``max_sequence_length=128``), as Flow-GRPO
#: does; diffusers' StableDiffusion3Pipeline defaults to 256 (333 tokens). One value for every path:
#: the presets, a pipeline folder loaded directly and the perf scripts all read it here.
SD3_TEXT = TextTokens(max_sequence_length=128, fixed=77, padded=True, encoder="T5-XXL")
#: Z-Image: the Qwen3 chat-templated prompt, real tokens only, at most 512 (diffusers'
#: ZImagePipeline ``max_sequence_length=512``).
Z_IMAGE_TEXT = TextTokens(
    max_sequence_length=512, fixed=0, padded=False, encoder="Qwen3-4B (real tokens only)"
)

_builtin(
    "sd3",
    "tdm_r1.models.sd3:SD3Adapter",
    "StableDiffusion3Pipeline",
    SD3_TEXT,
    steps=28,
    guidance=4.5,
    shift=3.0,
)
_builtin(
    "z-image",
    "tdm_r1.models.z_image:ZImageAdapter",
    "ZImagePipeline",
    Z_IMAGE_TEXT,
    steps=9,
    guidance=1.0,
    shift=3.0,
    spacing="zero-terminal",
    height=1024,
    width=1024,
)
