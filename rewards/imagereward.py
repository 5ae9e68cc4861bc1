"""ImageReward-v1.0 on transformers BLIP classes, without the ``image-reward`` package.

Upstream (THUDM/ImageReward, ``ImageReward.score``): the image (bicubic resize to 224, centre
crop, CLIP mean/std) goes through BLIP's ViT-L; the prompt, tokenised by ``bert-base-uncased``
(+ the ``[DEC]`` and ``[ENC]`` tokens BLIP adds; padded/truncated to 35 tokens), goes through
the BERT "med" text encoder with the image tokens as ``encoder_hidden_states`` (all-ones image
mask); the ``[CLS]`` (first) token of its last hidden state feeds the MLP head, and
``reward = (mlp - 0.16717362830052426) / 1.0333394966054072``. Reported SD3.5-M values: about
0.87 on DrawBench, 1.16 on HPDv2. The weight mapping is in :mod:`.imagereward_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tdm_r1.errors import ConfigError, ShapeError
from tdm_r1.registry import register_reward
from tdm_r1.rewards.checkpoints import load_torch_file, strip_prefix
from tdm_r1.rewards.imagereward_checkpoint import TEXT, VISION, SplitCheckpoint, load_strict, split_checkpoint
from tdm_r1.rewards.linear_mlp import load_linear_mlp
from tdm_r1.rewards.model_reward import ModelReward
from tdm_r1.rewards.preprocess import ImagePreprocess
from tdm_r1.weights import WeightFile, declare, resolve

log = logging.getLogger(__name__)

CHECKPOINT = WeightFile(
    key="imagereward.checkpoint",
    hub_id="THUDM/ImageReward",
    filename="ImageReward.pt",
    size="1.8 GB (about 450 M fp32 parameters; not verified)",
    env="TDMBENCH_IMAGEREWARD_CHECKPOINT",
    option="--reward-option imagereward.checkpoint_path",
    description="ImageReward-v1.0 checkpoint (BLIP ViT-L + BERT cross-attention encoder + MLP head)",
)
MED_CONFIG = WeightFile(
    key="imagereward.med_config",
    hub_id="THUDM/ImageReward",
    filename="med_config.json",
    size="1 KB",
    env="TDMBENCH_IMAGEREWARD_MED_CONFIG",
    option="--reward-option imagereward.med_config_path",
    description="ImageReward's BERT text-encoder configuration (med_config.json)",
)
TOKENIZER = WeightFile(
    key="imagereward.tokenizer",
    hub_id="google-bert/bert-base-uncased",
    filename="vocab.txt",
    size="232 KB",
    env="TDMBENCH_IMAGEREWARD_TOKENIZER",
    option="--reward-option imagereward.tokenizer_path",
    description="bert-base-uncased WordPiece vocabulary used by BLIP's tokenizer (vocab.txt)",
)
declare(CHECKPOINT, MED_CONFIG, TOKENIZER)

#: Normalisation of the MLP output (ImageReward.py ``self.mean`` / ``self.std``).
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
#: Prompt length (tokens, incl. [CLS]/[SEP]) used by ImageReward's ``score``.
TEXT_TOKENS = 35
#: BLIP's ViTs (base 768/12 heads, large 1024/16 heads) use 64-dim heads.
VIT_HEAD_DIM = 64


def vision_config_from_checkpoint(vision: Mapping[str, torch.Tensor], *, source: str) -> dict[str, Any]:
    """Read the ViT geometry off the weights: width, depth, MLP width, patch and image size."""
    try:
        width = int(vision["embeddings.class_embedding"].shape[-1])
        patch = int(vision["embeddings.patch_embedding.weight"].shape[-1])
        n_pos = int(vision["embeddings.position_embedding"].shape[1])
        mlp = int(vision["encoder.layers.0.mlp.fc1.weight"].shape[0])
    except KeyError as exc:
        raise ShapeError(f"{source}: vision weights lack {exc}; is this ImageReward.pt?") from exc
    depth = 1 + max(int(k.split(".")[2]) for k in vision if k.startswith("encoder.layers."))
    grid = math.isqrt(n_pos - 1)
    if grid * grid != n_pos - 1 or width % VIT_HEAD_DIM:
        raise ShapeError(
            f"{source}: {n_pos} position embeddings / width {width} do not describe a square BLIP ViT"
        )
    return {
        "hidden_size": width,
        "intermediate_size": mlp,
        "num_hidden_layers": depth,
        "num_attention_heads": width // VIT_HEAD_DIM,
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
    }


def text_config_from_med(med: Mapping[str, Any], *, encoder_width: int, source: str) -> dict[str, Any]:
    """``med_config.json`` (a BertConfig) -> ``BlipTextConfig`` kwargs; cross-attention to the ViT width."""
    if not med.get("add_cross_attention", False):
        raise ConfigError(
            f"{source}: add_cross_attention is not true; ImageReward's text encoder cross-attends"
        )
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"{source}: position_embedding_type {med['position_embedding_type']!r} is not supported"
        )
    try:
        return {
            "vocab_size": int(med["vocab_size"]),
            "hidden_size": int(med["hidden_size"]),
            "intermediate_size": int(med["intermediate_size"]),
            "num_hidden_layers": int(med["num_hidden_layers"]),
            "num_attention_heads": int(med["num_attention_heads"]),
            "max_position_embeddings": int(med["max_position_embeddings"]),
            "hidden_act": str(med.get("hidden_act", "gelu")),
            "layer_norm_eps": float(med.get("layer_norm_eps", 1e-12)),
            "pad_token_id": int(med.get("pad_token_id", 0)),
            # BLIP_Pretrain overrides encoder_width with the ViT width (1024 for vit='large').
            "encoder_hidden_size": encoder_width,
            # Builds the cross-attention modules; the forward still runs bidirectionally (is_decoder=False).
            "is_decoder": True,
            # Generation-only ids; unused when encoding.
            "bos_token_id": None,
            "eos_token_id": None,
            "sep_token_id": None,
        }
    except KeyError as exc:
        raise ConfigError(f"{source}: missing BERT setting {exc}") from exc


def blip_tokenizer(vocab_file: Path, *, expected_size: int) -> Any:
    """bert-base-uncased WordPiece + BLIP's ``[DEC]`` (bos) and ``[ENC]`` tokens."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tokenizer) != expected_size:
        raise ShapeError(
            f"tokenizer from {vocab_file} has {len(tokenizer)} tokens (with [DEC], [ENC]) but the text encoder "
            f"expects {expected_size}: use bert-base-uncased's vocab.txt (30522 entries)"
        )
    return tokenizer


@register_reward("imagereward", aliases=("image-reward",))
class ImageReward(ModelReward):
    """ImageReward-v1.0, normalised reward (the published scale).

    Args:
        checkpoint_path: local ``ImageReward.pt`` (or its folder).
        med_config_path: local ``med_config.json`` (or its folder).
        tokenizer_path: local ``vocab.txt`` of bert-base-uncased (or its folder).
        weights_only: ``torch.load(weights_only=True)`` (safe unpickling).
        device, dtype, batch_size: see :class:`~tdm_r1.rewards.model_reward.ModelReward`.
    """

    name = "imagereward"
    base_version = "1"
    higher_is_better = True
    scale = (
        "ImageReward-v1.0 as published: (MLP([CLS]) - 0.1672) / 1.0333, unbounded (typical about -2..2; "
        "SD3.5-M ~0.87 on DrawBench)"
    )
    weight_files = (CHECKPOINT, MED_CONFIG, TOKENIZER)

    def __init__(
        self,
        checkpoint_path: str | Path | None = None,
        med_config_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        weights_only: bool = True,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        batch_size: int = 16,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        ckpt_file = resolve(CHECKPOINT, checkpoint_path)
        med_file = resolve(MED_CONFIG, med_config_path)
        vocab_file = resolve(TOKENIZER, tokenizer_path)
        from accelerate import init_empty_weights
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        raw = load_torch_file(ckpt_file, weights_only=weights_only)
        state = raw["state_dict"] if isinstance(raw, Mapping) and "state_dict" in raw else raw
        if not isinstance(state, Mapping):
            raise ShapeError(f"{ckpt_file} holds a {type(state).__name__}, not a state dict")
        parts: SplitCheckpoint = split_checkpoint(strip_prefix(state, "module."), source=str(ckpt_file))
        vision_cfg = vision_config_from_checkpoint(parts.vision, source=str(ckpt_file))
        med = json.loads(Path(med_file).read_text())
        text_cfg = text_config_from_med(med, encoder_width=vision_cfg["hidden_size"], source=str(med_file))

        with init_empty_weights():
            vision = BlipVisionModel(BlipVisionConfig(**vision_cfg))
            text = BlipTextModel(BlipTextConfig(**text_cfg), add_pooling_layer=False)
        load_strict(vision, parts.vision, what=VISION, source=str(ckpt_file))
        load_strict(text, parts.text, what=TEXT, source=str(ckpt_file))
        head = load_linear_mlp(parts.head, source=f"{ckpt_file} (mlp.*)")
        if head.layers[0].in_features != text_cfg["hidden_size"]:
            raise ShapeError(
                f"{ckpt_file}: MLP input {head.layers[0].in_features} != text width {text_cfg['hidden_size']}"
            )
        log.info(
            "imagereward: mapped %d vision, %d text, %d head tensors (%d unused: %s)",
            len(parts.vision),
            len(parts.text),
            len(parts.head),
            len(parts.unused),
            parts.unused,
        )
        self.vision = vision.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.text = text.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.head = head.to(device=self.device).requires_grad_(False)  # float32, as upstream (.float())
        self.tokenizer = blip_tokenizer(Path(vocab_file), expected_size=text_cfg["vocab_size"])
        side = vision_cfg["image_size"]
        self.preprocess = ImagePreprocess(size=side, crop=side)

    def score_batch(
        self, images: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pixels = self.preprocess(images, device=self.device, dtype=self.dtype)
        image_tokens = self.vision(pixel_values=pixels).last_hidden_state  # (n, 1 + patches, width)
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt"
        )
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=self.device)
        out = self.text(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=image_mask,
        )
        cls = out.last_hidden_state[:, 0, :].float()
        raw = self.head(cls).squeeze(-1)
        return (raw - REWARD_MEAN) / REWARD_STD, {"mlp": raw}
