"""The traced workloads: the real transformer (any device), its LoRA roles, one step's inputs.

Everything here runs unchanged on ``meta`` (the planner), on the CPU with real tensors (the
validation in ``tests/planning/test_planner.py``) and on a GPU (``benchmarks/perf/gpu_check.py``): the
prediction and the measurement are the same program, only the device and the accounting differ.
LoRA is applied with peft exactly as :class:`tdm_r1.models.roles.LoraRoles` does (one adapter per
role, alpha = 2 r by default, fp32 weights), without going through the adapter, so no pipeline or
weights are needed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tdm_r1.errors import ConfigError
from tdm_r1.models.architectures import SD3_TEXT, SD35_MEDIUM_TRANSFORMER, Z_IMAGE_TEXT, Z_IMAGE_TRANSFORMER
from tdm_r1.models.preset import SD3_LORA_TARGETS, Z_IMAGE_LORA_TARGETS

LATENT_CHANNELS = 16
VAE_FACTOR = 8  # both VAEs downsample 8x


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a model family: its transformer config and its text conditioning."""

    name: str
    family: str  # "sd3" | "z-image"
    config: dict[str, Any]
    targets: tuple[str, ...]
    text_tokens: int
    text_width: int
    pooled: int = 0
    #: frozen components outside the transformer, bf16 parameters (public model cards / configs):
    #: SD3.5: CLIP-L text 123.1 M + OpenCLIP bigG text 694.7 M + T5-XXL encoder 4762.3 M; VAE 83.7 M.
    #: Z-Image: Qwen3-4B 4022.5 M (tied embeddings); FLUX VAE 83.8 M.
    text_encoder_params: int = 0
    vae_params: int = 0

    def __hash__(self) -> int:  # the config dict is part of the identity (traces are cached by it)
        return hash(
            (self.name, repr(sorted(self.config.items())), self.text_tokens, self.text_width, self.pooled)
        )

    def with_config(self, **overrides: Any) -> ModelShape:
        return ModelShape(**{**self.__dict__, "config": {**self.config, **overrides}})


MODELS: dict[str, ModelShape] = {
    "sd3.5-medium": ModelShape(
        "sd3.5-medium",
        "sd3",
        SD35_MEDIUM_TRANSFORMER,
        SD3_LORA_TARGETS,
        text_tokens=SD3_TEXT["clip_tokens"] + 256,  # 77 CLIP + 256 T5 (diffusers max_sequence_length)
        text_width=SD3_TEXT["width"],
        pooled=SD3_TEXT["pooled"],
        text_encoder_params=123_060_480 + 694_659_840 + 4_762_310_656,
        vae_params=83_653_863,
    ),
    "z-image": ModelShape(
        "z-image",
        "z-image",
        Z_IMAGE_TRANSFORMER,
        Z_IMAGE_LORA_TARGETS,
        text_tokens=Z_IMAGE_TEXT["max_tokens"],  # the cap: a planner should not under-count
        text_width=Z_IMAGE_TEXT["width"],
        text_encoder_params=4_022_468_096,
        vae_params=83_819_683,
    ),
}
FAMILY_OF_PRESET = {"sd3": "sd3.5-medium", "z-image": "z-image"}


def model_shape(name: str) -> ModelShape:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} for planning; known: {', '.join(MODELS)}")
    return MODELS[name]


def build_transformer(
    shape: ModelShape, device: str | torch.device, dtype: torch.dtype = torch.bfloat16
) -> nn.Module:
    """The diffusers transformer of ``shape`` on ``device``, frozen, in ``dtype`` (no weights on meta)."""
    if shape.family == "sd3":
        from diffusers import SD3Transformer2DModel as cls
    else:
        from diffusers import ZImageTransformer2DModel as cls
    from diffusers.utils import logging as dlog

    with torch.device(device):
        model = cls(**shape.config)
    level = dlog.get_verbosity()
    dlog.set_verbosity_error()  # "modules that should be kept in float32: []": none, for these two
    try:
        model.to(dtype)
    finally:
        dlog.set_verbosity(level)
    model.requires_grad_(False).eval()
    return model


def add_lora(
    model: nn.Module, name: str, *, rank: int, trainable: bool, targets: tuple[str, ...]
) -> list[nn.Parameter]:
    """One peft LoRA role (alpha = 2 r) on ``targets``, fp32 weights, as ``LoraRoles.add`` does."""
    import warnings

    from peft import LoraConfig

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        model.add_adapter(
            LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets)), adapter_name=name
        )
    params = [p for n, p in model.named_parameters() if f".{name}." in n]
    for p in params:
        p.data = p.data.to(torch.float32)
        p.requires_grad_(trainable)
    return params


def use_role(model: nn.Module, name: str | None) -> None:
    """Activate one role (None: adapters off), keeping each role's ``requires_grad`` as it was."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    if name is None:
        model.disable_adapters()
    else:
        model.enable_adapters()
        model.set_adapter(name)
    for p in model.parameters():
        p.requires_grad_(flags[id(p)])


def enable_checkpointing(model: nn.Module, device: torch.device) -> None:
    """diffusers' gradient checkpointing (non-reentrant ``torch.utils.checkpoint``). Off the GPU the
    recomputation re-enters the tracer's semantics (``context_fn``) and no RNG state is stashed
    (the transformer has no dropout, so memory is the same)."""
    if device.type == "cuda":
        model.enable_gradient_checkpointing()
        return
    from tdm_r1.planning.trace import recompute_context

    ckpt = functools.partial(
        torch.utils.checkpoint.checkpoint,
        use_reentrant=False,
        preserve_rng_state=False,
        context_fn=recompute_context,
    )
    model.enable_gradient_checkpointing(lambda module, *args: ckpt(module.__call__, *args))


def image_tokens(shape: ModelShape, resolution: int) -> int:
    side = resolution // VAE_FACTOR // 2  # patch 2
    return side * side


def make_forward(
    shape: ModelShape, batch: int, resolution: int, device: str | torch.device, text_tokens: int | None = None
) -> Callable[[nn.Module], torch.Tensor]:
    """``call(model) -> (B, C, h, w)`` output for one NFE on fresh inputs (bf16, as the adapters pass them)."""
    dev, bf16 = torch.device(device), torch.bfloat16
    h = w = resolution // VAE_FACTOR
    n_txt = text_tokens or shape.text_tokens

    def randn(*size: int, dtype: torch.dtype = bf16) -> torch.Tensor:
        return torch.randn(size, device=dev, dtype=dtype)

    x = randn(batch, LATENT_CHANNELS, h, w)
    sigma = torch.rand(batch, device=dev)
    if shape.family == "sd3":
        txt, pooled = randn(batch, n_txt, shape.text_width), randn(batch, shape.pooled)

        def call(model: nn.Module) -> torch.Tensor:
            return model(
                hidden_states=x,
                timestep=sigma * 1000.0,
                encoder_hidden_states=txt,
                pooled_projections=pooled,
                return_dict=False,
            )[0]

        return call
    caps = [randn(n_txt, shape.text_width) for _ in range(batch)]

    def call_z(model: nn.Module) -> torch.Tensor:
        out = model(list(x.unsqueeze(2).unbind(0)), 1.0 - sigma, caps, return_dict=False)[0]
        return torch.stack(list(out)).squeeze(2)

    return call_z


def static_bytes(tensors: list[torch.Tensor], rounding: int = 512) -> int:
    """Bytes of distinct storages (parameters, buffers), rounded per block like the allocator."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st._cdata] = -(-int(st.nbytes()) // rounding) * rounding
    return sum(seen.values())


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]
