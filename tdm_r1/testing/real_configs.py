"""Configurations of the real models, for random-weight runs (perf, memory, LoRA layouts).

No weights: these are the ``config.json`` values of the released diffusers folders, so that
``SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER)`` builds the real architecture (e.g. on the
``meta`` device or with random weights on a GPU). Where each value comes from is noted; the
public copies were found with the code search of the reference tools (not downloaded).
"""

from __future__ import annotations

from typing import Any

# the transformer configs and text widths live in the product (the planner builds them): one place
from tdm_r1.models.architectures import SD3_TEXT, SD35_MEDIUM_TRANSFORMER, Z_IMAGE_TRANSFORMER

__all__ = [
    "FLUX_VAE",
    "QWEN3_4B_TEXT_ENCODER",
    "SD3_TEXT",
    "SD3_VAE",
    "SD35_MEDIUM_TRANSFORMER",
    "Z_IMAGE_TRANSFORMER",
]

# stabilityai/stable-diffusion-3.5-medium, vae/config.json (SD3 16-channel VAE; same in SD3-Medium).
SD3_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}

# Tongyi-MAI/Z-Image(-Turbo), vae/config.json: the FLUX.1 VAE (same layout as SD3's, other factors).
FLUX_VAE: dict[str, Any] = {**SD3_VAE, "scaling_factor": 0.3611, "shift_factor": 0.1159, "force_upcast": True}

# Tongyi-MAI/Z-Image(-Turbo), text_encoder/config.json: Qwen3-4B (only its hidden states[-2] are used).
QWEN3_4B_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 2560,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 9728,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1_000_000,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
