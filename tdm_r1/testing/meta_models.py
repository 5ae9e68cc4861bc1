"""Real-size models on the meta device: built, wrapped with every training role, identified, planned.

No weights and no memory: every module is built under ``torch.device("meta")`` from the real
``config.json`` values (:mod:`tdm_r1.testing.real_configs`, and the text encoders below), then
wrapped by tdmbench's own adapter (``device="cpu"``: where the weights would be loaded) and given
the LoRA roles of every training method. What a GPU user needs before the first real-size run can
be checked here: the module layout, the LoRA tensor counts, the adapter's identity and the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tdm_r1.testing import real_configs

#: The roles of every training method (tdm-r1: generator, fake, surrogate, surrogate_old;
#: flow-grpo / diffusionnft / dgpo: reference, old).
ALL_ROLES: tuple[str, ...] = ("generator", "fake", "surrogate", "surrogate_old", "reference", "old")

#: The presets whose sampling and LoRA layout the meta models take.
PRESETS = {"sd3.5-medium": "tdm-sd3.5-medium-4step", "z-image": "z-image-4step"}

# SD3.5-Medium's text encoders (stabilityai/stable-diffusion-3.5-medium text_encoder*/config.json):
# CLIP ViT-L/14's text tower, OpenCLIP ViT-bigG/14's text tower (both with projection), T5 v1.1 XXL's encoder.
CLIP_L_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
CLIP_G_TEXT: dict[str, Any] = {
    **CLIP_L_TEXT,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}
T5_XXL_ENCODER: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
}


def _meta_modules(model: str, text_encoders: bool) -> dict[str, Any]:
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        if model == "sd3.5-medium":
            from diffusers import SD3Transformer2DModel

            parts: dict[str, Any] = {
                "transformer": SD3Transformer2DModel(**real_configs.SD35_MEDIUM_TRANSFORMER),
                "vae": AutoencoderKL(**real_configs.SD3_VAE),
            }
            if text_encoders:
                from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

                parts["text_encoder"] = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L_TEXT))
                parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G_TEXT))
                parts["text_encoder_3"] = T5EncoderModel(T5Config(**T5_XXL_ENCODER))
            return parts
        if model == "z-image":
            from diffusers import ZImageTransformer2DModel

            parts = {
                "transformer": ZImageTransformer2DModel(**real_configs.Z_IMAGE_TRANSFORMER),
                "vae": AutoencoderKL(**real_configs.FLUX_VAE),
            }
            if text_encoders:
                from transformers import Qwen3Config, Qwen3Model

                parts["text_encoder"] = Qwen3Model(Qwen3Config(**real_configs.QWEN3_4B_TEXT_ENCODER))
            return parts
    raise ValueError(f"unknown real-size model {model!r}; valid: {', '.join(PRESETS)}")


def meta_adapter(
    model: str,
    *,
    roles: Sequence[str] = ALL_ROLES,
    text_encoders: bool = True,
    device: str = "cpu",
    dtype: str = "bfloat16",
    rank: int = 32,
) -> Any:
    """A real-size adapter with no weights (meta device) and the LoRA ``roles`` added.

    The generator takes its preset's LoRA layout (rank, alpha, targets); the other roles the
    family's default targets, as the trainer adds them.
    """
    from tdm_r1.models.families import adapter_class
    from tdm_r1.registry import MODELS

    preset = MODELS.get(PRESETS[model])
    parts = _meta_modules(model, text_encoders)
    cls = adapter_class(preset.family)
    adapter = cls(preset=preset, device=device, dtype=dtype, **parts)
    for name in roles:
        targets = preset.lora_targets if name == "generator" else None
        adapter.roles.add(name, rank=rank, alpha=2.0 * rank, target_modules=targets)
    return adapter


def meta_plan(adapter: Any) -> dict[str, Any]:
    """What a run of ``adapter`` needs, from shapes alone: sizes, LoRA tensors per role, latents, NFE."""
    sampling = adapter.sampling
    frozen = sum(p.numel() for n, p in adapter.transformer.named_parameters() if "lora_" not in n)
    per_role = {
        role: {
            "tensors": len(adapter.roles.parameters(role)),
            "parameters": sum(p.numel() for p in adapter.roles.parameters(role)),
            "wrapped_modules": len(adapter.roles.parameters(role)) // 2,
            "digest": adapter.roles.digest(role),
        }
        for role in adapter.roles
    }
    encoders = sum(p.numel() for m in adapter.text_encoder_modules() for p in m.parameters())
    return {
        "transformer_parameters": frozen,
        "text_encoder_parameters": encoders,
        "vae_parameters": sum(p.numel() for p in adapter.vae.parameters()),
        "roles": per_role,
        "latent_shape": adapter.latent_shape(sampling.height, sampling.width),
        "nfe": adapter.nfe,
        "sigmas": [round(float(s), 4) for s in adapter.schedule().sigmas],
        "text_tokens": adapter.text_tokens(),
    }
