"""Tiny components of the toy text-to-image model, in the real diffusers/transformers formats.

The toy teacher is a real Stable Diffusion 3 pipeline in miniature, so the SD3 adapter, the
sampler, LoRA roles and the trainer exercise the same code paths as SD3.5-Medium:

* tokenizers: the real CLIP BPE tokenizer (vocabulary from open_clip's wheel), with a short
  ``model_max_length`` because toy prompts are short;
* two tiny ``CLIPTextModelWithProjection`` text encoders (no T5: SD3 pads it with zeros);
* a tiny ``AutoencoderKL`` (64x64x3 <-> 16x16x4);
* a small ``SD3Transformer2DModel`` over the 16x16x4 latents (patch 2 -> 64 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOKENIZER_MAX_LENGTH = 20


def clip_tokenizer(model_max_length: int = TOKENIZER_MAX_LENGTH) -> Any:
    """The real CLIP tokenizer (49408 tokens, built offline) with the toy's short max length."""
    from tdm_r1.toyworld.clip_tokenizer import clip_tokenizer as build

    return build(model_max_length)


@dataclass(frozen=True)
class ToyArch:
    """Sizes of the toy model (the defaults are the shipped toy teacher)."""

    te1_hidden: int = 64
    te2_hidden: int = 32
    te_layers: int = 2
    te_heads: int = 4
    ae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    dit_layers: int = 6
    dit_heads: int = 4
    dit_head_dim: int = 32
    patch_size: int = 2
    image_size: int = 64


def text_encoder(hidden: int, arch: ToyArch, seed: int) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=arch.te_layers,
        num_attention_heads=arch.te_heads,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        projection_dim=hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(cfg)


def autoencoder(arch: ToyArch, seed: int = 0) -> Any:
    import torch
    from diffusers import AutoencoderKL

    n = len(arch.ae_channels)
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=arch.ae_channels,
        layers_per_block=1,
        latent_channels=arch.latent_channels,
        norm_num_groups=16,
        sample_size=arch.image_size,
        mid_block_add_attention=False,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def transformer(arch: ToyArch, seed: int = 0) -> Any:
    import torch
    from diffusers import SD3Transformer2DModel

    inner = arch.dit_heads * arch.dit_head_dim
    joint = arch.te1_hidden + arch.te2_hidden
    down = 2 ** (len(arch.ae_channels) - 1)
    latent = arch.image_size // down
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=latent,
        patch_size=arch.patch_size,
        in_channels=arch.latent_channels,
        num_layers=arch.dit_layers,
        attention_head_dim=arch.dit_head_dim,
        num_attention_heads=arch.dit_heads,
        joint_attention_dim=joint,
        caption_projection_dim=inner,
        pooled_projection_dim=joint,
        out_channels=arch.latent_channels,
        pos_embed_max_size=latent // arch.patch_size,
    )


def tokenize(prompts: list[str], tokenizer: Any) -> Any:
    """(N, L) int64 CLIP ids, padded to the tokenizer's ``model_max_length``."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode_ids_sd3(ids: Any, text_encoders: tuple[Any, Any], joint_dim: int) -> tuple[Any, Any]:
    """SD3 prompt embeddings from CLIP ids (N, L); see :func:`encode_prompts_sd3`."""
    import torch
    import torch.nn.functional as F

    hidden, pooled = [], []
    for enc in text_encoders:
        out = enc(ids.to(enc.device), output_hidden_states=True)
        pooled.append(out[0])
        hidden.append(out.hidden_states[-2])
    clip = torch.cat(hidden, dim=-1)
    clip = F.pad(clip, (0, joint_dim - clip.shape[-1]))
    t5 = torch.zeros(clip.shape[0], ids.shape[1], joint_dim, dtype=clip.dtype, device=clip.device)
    return torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)


def encode_prompts_sd3(
    prompts: list[str], tokenizers: tuple[Any, Any], text_encoders: tuple[Any, Any], joint_dim: int
) -> tuple[Any, Any]:
    """SD3's prompt encoding without T5 (as ``StableDiffusion3Pipeline`` does when it is absent).

    Returns:
        prompt_embeds: (N, 2 * L, joint_dim) — CLIP penultimate hidden states (concatenated over
            the two encoders, zero-padded to ``joint_dim``) followed by L zero "T5" tokens.
        pooled: (N, d1 + d2) — the two CLIP projected pooled embeddings.
    """
    if tokenizers[0] is not tokenizers[1] and tokenizers[0].get_vocab() != tokenizers[1].get_vocab():
        raise ValueError("the toy model uses one CLIP tokenizer for both text encoders")
    return encode_ids_sd3(tokenize(prompts, tokenizers[0]), text_encoders, joint_dim)
