"""Transformer configurations of the real models (``config.json`` values, no weights).

``SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER)`` builds the real architecture, e.g. on the
``meta`` device for the memory planner (:mod:`tdm_r1.planning`) or with random weights on a GPU
(``tdm_r1.testing.real_configs`` re-exports these for tests and perf scripts). Where each value
comes from is noted; the public copies were found with code search (not downloaded).
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

#: Z-Image text conditioning: Qwen3-4B hidden states of the prompt's real tokens (chat template
#: included), at most ``max_sequence_length`` = 512 (diffusers ``ZImagePipeline``).
Z_IMAGE_TEXT = {"max_tokens": 512, "width": 2560}
