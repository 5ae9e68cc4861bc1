"""Configurations of the real models, for random-weight runs (perf, memory, LoRA layouts).

No weights: these are the ``config.json`` values of the released diffusers folders, so that
``SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER)`` builds the real architecture (e.g. on the
``meta`` device or with random weights on a GPU). Where each value comes from is noted; the
public copies were found with the code search of the reference tools (not downloaded).
"""

from __future__ import annotations

from typing import Any

# stabilityai/stable-diffusion-3.5-medium, transformer/config.json (the same values appear in several
# public reproductions of that file; cross-checked with the SD3.5-Large config, which differs in
# layers/heads/caption dim and has no dual-attention layers). 2.24 B parameters.
SD35_MEDIUM_TRANSFORMER: dict[str, Any] = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,  # T5-XXL width
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,  # CLIP-L 768 + CLIP-G 1280 pooled projections
    "out_channels": 16,
    "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)),  # MMDiT-X: blocks 0-12 have a second self-attention
    "qk_norm": "rms_norm",
}

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

#: SD3.5 text conditioning widths: CLIP-L (hidden 768) + CLIP-G (hidden 1280) penultimate states,
#: zero-padded to T5-XXL's 4096 and followed by the T5 tokens; pooled = 768 + 1280.
SD3_TEXT = {"clip_tokens": 77, "width": 4096, "pooled": 2048}

# Tongyi-MAI/Z-Image-Turbo (and Tongyi-MAI/Z-Image), transformer/config.json, as reproduced in several
# public repositories. Note: 30 heads of dimension 128 (3840 / 30), not 32 heads. 6.15 B parameters.
Z_IMAGE_TRANSFORMER: dict[str, Any] = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": 2560,  # Qwen3-4B hidden size
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
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
