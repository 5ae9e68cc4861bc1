"""Tiny random-weight diffusers pipelines built offline, in code, with fixed seeds.

Used by the tests (fidelity against the diffusers pipelines) and by the CPU run of the perf script.
Every component is a *real* diffusers / transformers class, so the real loading, encoding and
sampling code runs; only the sizes are small and the weights random.

Tokenizers are built without network access:

* CLIP: the real CLIP tokenizer, built offline (:mod:`tdm_r1.toyworld.clip_tokenizer`).
* Qwen3 / T5 stand-in: a small byte-level BPE trained here on a fixed corpus, with a chat template
  (``ZImagePipeline`` calls ``apply_chat_template``).
"""

from __future__ import annotations

import functools
from typing import Any

from tdm_r1.toyworld.clip_tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer

#: A 3-line ChatML template: enough for ``ZImagePipeline`` (it passes ``enable_thinking``, ignored here).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


_CORPUS = [
    "a photo of a red cube on a blue sphere",
    "two green cats and three yellow dogs next to a white car",
    "a sign that says hello world, the quick brown fox jumps over the lazy dog",
    "an orange triangle left of a purple circle under a black square",
    "a painting of mountains at sunset, highly detailed, 4k, trending",
    "the word STOP written in bold letters on a wooden board",
    "0123456789 !?.,;:'\"()[]{}<>-_=+*/\\|@#$%^&~` ",
]


@functools.lru_cache(maxsize=4)
def bpe_tokenizer(vocab_size: int = 384, model_max_length: int = 512) -> Any:
    """A tiny byte-level BPE tokenizer trained offline on a fixed corpus, with a chat template.

    Stand-in for the Qwen3 (Z-Image) and T5 (SD3) tokenizers in tests: any text is encodable
    (byte-level alphabet), padding uses ``<|endoftext|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
        chat_template=CHAT_TEMPLATE,
    )


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_vae(*, latent_channels: int, seed: int, scaling_factor: float, shift_factor: float) -> Any:
    """A 2-block AutoencoderKL (downsampling factor 2) with explicit scaling/shift factors."""
    from diffusers import AutoencoderKL

    _seeded(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=latent_channels,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def tiny_sd3_components(
    *, seed: int = 0, with_t5: bool = False, joint_attention_dim: int = 32, num_layers: int = 2
) -> dict[str, Any]:
    """Components of a tiny ``StableDiffusion3Pipeline`` (SD3.5-style: dual attention in block 0, RMS qk-norm).

    Two tiny CLIP text encoders (hidden 16, projection 16) share the real CLIP tokenizer; the T5
    encoder is a tiny ``T5EncoderModel`` with the offline BPE tokenizer, or absent (``with_t5=False``),
    in which case the pipeline (and tdmbench) use zeros, as diffusers does.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    _seeded(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=32,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )
    clip_kw = dict(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=16,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_act="gelu",
    )
    _seeded(seed + 1)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**clip_kw))
    _seeded(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**clip_kw))
    text_encoder_3 = tokenizer_3 = None
    if with_t5:
        tokenizer_3 = bpe_tokenizer()
        _seeded(seed + 3)
        text_encoder_3 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_3),
                d_model=joint_attention_dim,
                d_kv=8,
                d_ff=32,
                num_layers=2,
                num_heads=2,
                relative_attention_num_buckets=8,
                pad_token_id=tokenizer_3.pad_token_id,
                eos_token_id=tokenizer_3.eos_token_id,
                decoder_start_token_id=tokenizer_3.pad_token_id,
            )
        )
    vae = tiny_vae(latent_channels=4, seed=seed + 4, scaling_factor=1.5305, shift_factor=0.0609)
    return dict(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def tiny_sd3_pipeline(**kwargs: Any) -> Any:
    """A tiny random ``StableDiffusion3Pipeline`` (see :func:`tiny_sd3_components`), in eval mode, fp32."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**tiny_sd3_components(**kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_z_image_components(*, seed: int = 0, dim: int = 32, n_layers: int = 2) -> dict[str, Any]:
    """Components of a tiny ``ZImagePipeline``: Z-Image transformer, Qwen3 text encoder, 16-channel VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = bpe_tokenizer()
    _seeded(seed)
    cap_dim = 16
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=dim,
        n_layers=n_layers,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        qk_norm=True,
        cap_feat_dim=cap_dim,
        axes_dims=[dim // 2 - 8, 4, 4],
        axes_lens=[256, 64, 64],
    )
    _seeded(seed + 1)
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=cap_dim,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = tiny_vae(latent_channels=16, seed=seed + 2, scaling_factor=0.3611, shift_factor=0.1159)
    return dict(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


def tiny_z_image_pipeline(**kwargs: Any) -> Any:
    """A tiny random ``ZImagePipeline`` (see :func:`tiny_z_image_components`), fp32."""
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline(**tiny_z_image_components(**kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reorder_submodules(module: Any, name: str, before: str) -> int:
    """Register every child ``name`` before its sibling ``before`` (e.g. ``to_k`` before ``to_q``).

    What a diffusers release that registers the attention projections in another order does to
    ``named_parameters``: the same tensors, another order. Returns how many modules changed.
    """
    changed = 0
    for sub in module.modules():
        children = sub._modules
        if name in children and before in children:
            keys = [k for k in children if k != name]
            keys.insert(keys.index(before), name)
            reordered = {k: children[k] for k in keys}
            children.clear()
            children.update(reordered)
            changed += 1
    return changed
