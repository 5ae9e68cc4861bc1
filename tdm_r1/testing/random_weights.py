"""Random-weight reward checkpoints written in the real on-disk formats (for tests and perf).

No reward weights can be downloaded on the development machines, so tests and the perf
script write random-initialised models in exactly the formats the rewards read (transformers
``save_pretrained`` folders, open_clip state dicts under ``"state_dict"``, ``.pth`` MLP heads
with the LAION key names, ``ImageReward.pt`` with upstream key names) and load them through
the real loading code. ``size="tiny"`` builds models of a few MB in seconds; the real sizes
(``"vit-l-14"``, ``"vit-h-14"``, ``"blip-large"``) reproduce the published architectures.
The CLIP tokenizer is the real one (:mod:`tdm_r1.toyworld.clip_tokenizer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tdm_r1.errors import ConfigError
from tdm_r1.toyworld.clip_tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer

#: transformers CLIPConfig kwargs per size (text_config, vision_config, projection_dim).
HF_CLIP_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "text_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        "projection_dim": 16,
    },
    # openai/clip-vit-large-patch14 (clipscore, aesthetic)
    "vit-l-14": {
        "text_config": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
        },
        "vision_config": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "hidden_act": "quick_gelu",
        },
        "projection_dim": 768,
    },
    # laion/CLIP-ViT-H-14-laion2B-s32B-b79K architecture = yuvalkirstain/PickScore_v1
    "vit-h-14": {
        "text_config": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
        },
        "vision_config": {
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "hidden_act": "gelu",
        },
        "projection_dim": 1024,
    },
}

#: open_clip architectures: tiny ones are registered at run time under these names.
OPEN_CLIP_TINY = "tdmbench-tiny-ViT"
_OPEN_CLIP_TINY_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB_SIZE, "width": 32, "heads": 2, "layers": 2},
}

#: ImageReward sizes: BLIP ViT (vision) and BERT med_config (text).
IMAGEREWARD_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "vision": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        "med": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
        },
        "vocab": "tiny",
    },
    # ImageReward-v1.0: BLIP_Pretrain(vit='large', image_size=224) + the published med_config.json
    "blip-large": {
        "vision": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 16,
        },
        "med": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 512,
        },
        "vocab": "bert-size",
    },
}


def _size(table: dict[str, Any], size: str) -> dict[str, Any]:
    if size not in table:
        raise ConfigError(f"unknown size {size!r}; valid: {', '.join(table)}")
    return table[size]


# ----------------------------------------------------------------------------- writers
def write_hf_clip(folder: str | Path, size: str = "tiny", *, seed: int = 0) -> Path:
    """A random ``CLIPModel`` + ``CLIPProcessor`` saved with ``save_pretrained`` into ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    spec = _size(HF_CLIP_SIZES, size)
    folder = Path(folder)
    text = {**spec["text_config"], "vocab_size": CLIP_VOCAB_SIZE, "eos_token_id": CLIP_VOCAB_SIZE - 1}
    text.update(bos_token_id=CLIP_VOCAB_SIZE - 2, pad_token_id=CLIP_VOCAB_SIZE - 1)
    config = CLIPConfig(
        text_config=text, vision_config=spec["vision_config"], projection_dim=spec["projection_dim"]
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    px = spec["vision_config"]["image_size"]
    image_processor = CLIPImageProcessor(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)
    return folder


def register_tiny_open_clip(config_dir: str | Path) -> str:
    """Register the tiny open_clip architecture (idempotent); returns its name."""
    import open_clip

    if OPEN_CLIP_TINY not in open_clip.list_models():
        path = Path(config_dir) / f"{OPEN_CLIP_TINY}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_OPEN_CLIP_TINY_CFG))
        open_clip.add_model_config(path)
    return OPEN_CLIP_TINY


def write_hps_checkpoint(
    path: str | Path, arch: str, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    """A random open_clip ``arch`` saved as HPSv2 does: ``torch.save({"state_dict": ...})``."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, path)
    return path


def write_aesthetic_mlp(path: str | Path, in_features: int = 768, *, seed: int = 0) -> Path:
    """A random LAION aesthetic MLP head saved as ``torch.save(state_dict)`` with the real key names."""
    from tdm_r1.rewards.linear_mlp import LinearMLP

    torch.manual_seed(seed)
    mlp = LinearMLP(in_features)
    with torch.no_grad():  # the published head has O(1) weights; default init makes outputs ~0
        for layer in mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, 1.0 / layer.in_features**0.5)
                layer.bias.uniform_(-0.5, 0.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(mlp.state_dict(), path)
    return path


def bert_style_vocab(kind: str) -> list[str]:
    """A WordPiece vocabulary with BERT's special-token layout; ``bert-size`` has 30522 entries."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    if kind == "tiny":
        words = ["photo", "of", "cat", "dog", "red", "blue", "sign", "the", "on", "two"]
        return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters, *(f"##{c}" for c in letters)]
    if kind != "bert-size":
        raise ConfigError(f"unknown vocab kind {kind!r}")
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [*letters, *(f"##{c}" for c in letters), *map(str, range(10))]
    vocab += [f"word{i}" for i in range(30522 - len(vocab))]
    return vocab


def write_imagereward(folder: str | Path, size: str = "tiny", *, seed: int = 0) -> dict[str, Path]:
    """Random ImageReward files: ``ImageReward.pt`` (upstream key names), ``med_config.json``, ``vocab.txt``.

    The weights come from transformers BLIP modules renamed with the inverse of the loader's
    mapping, plus the upstream-only keys (``blip.vision_proj``, ``blip.text_proj``,
    ``embeddings.position_ids``) so that the loader meets the real key set.
    """
    from accelerate.utils import set_seed
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    from tdm_r1.rewards.imagereward_checkpoint import to_upstream_state_dict
    from tdm_r1.rewards.linear_mlp import LinearMLP

    spec = _size(IMAGEREWARD_SIZES, size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = bert_style_vocab(spec["vocab"])
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    med = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "model_type": "bert",
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": len(vocab) + 2,  # + [DEC], [ENC]
        "encoder_width": 768,
        "add_cross_attention": True,
        **spec["med"],
    }
    (folder / "med_config.json").write_text(json.dumps(med, indent=2))
    set_seed(seed)
    v = spec["vision"]
    vision = BlipVisionModel(BlipVisionConfig(**v, layer_norm_eps=1e-6))
    text_kwargs = {k: med[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")}
    text_kwargs.update(
        num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"],
        encoder_hidden_size=v["hidden_size"],
        is_decoder=True,
        bos_token_id=None,
        eos_token_id=None,
        sep_token_id=None,
    )
    text = BlipTextModel(BlipTextConfig(**text_kwargs), add_pooling_layer=False)
    head = LinearMLP(med["hidden_size"])
    with torch.no_grad():  # BLIP's LayerNorm init is (1, 0); give every tensor some spread
        for module in (vision, text, head):
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))
    extra = {
        "blip.vision_proj.weight": torch.randn(256, v["hidden_size"]) * 0.02,
        "blip.vision_proj.bias": torch.zeros(256),
        "blip.text_proj.weight": torch.randn(256, med["hidden_size"]) * 0.02,
        "blip.text_proj.bias": torch.zeros(256),
        "blip.text_encoder.embeddings.position_ids": torch.arange(med["max_position_embeddings"]).unsqueeze(
            0
        ),
    }
    state = to_upstream_state_dict(vision.state_dict(), text.state_dict(), head.state_dict(), extra)
    torch.save(state, folder / "ImageReward.pt")
    return {
        "checkpoint_path": folder / "ImageReward.pt",
        "med_config_path": folder / "med_config.json",
        "tokenizer_path": folder / "vocab.txt",
    }
