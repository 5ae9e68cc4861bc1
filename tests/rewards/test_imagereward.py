"""imagereward: the key-mapping loader against an independent reference of the upstream model.

``Ref*`` below re-implements, in plain torch, the upstream ImageReward forward (BLIP's
timm-style ViT, BLIP's med.py BERT with cross-attention, the MLP head, the normalisation) with
module names chosen so that ``state_dict()`` has the real ``ImageReward.pt`` key names. A tiny
random instance is saved as ``.pt`` and loaded through the reward's real path (key mapping
into transformers BLIP classes); both must give the same rewards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tdm_r1.errors import ShapeError
from tdm_r1.registry import REWARDS
from tdm_r1.rewards import imagereward_checkpoint as ckpt_map
from tdm_r1.testing import random_weights as rw
from tdm_r1.testing.reward_checks import (
    PROMPTS,
    assert_fast_missing_weights,
    smooth_images,
    use_empty_hf_cache,
)

MEAN, STD = 0.16717362830052426, 1.0333394966054072


# ------------------------------------------------------------------ reference (upstream layout)
class RefAttention(nn.Module):  # blip.visual_encoder.blocks.N.attn
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))


class RefFeedForward(nn.Module):  # ...blocks.N.mlp
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = RefAttention(dim, heads), RefFeedForward(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefPatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


class RefViT(nn.Module):  # blip.visual_encoder
    def __init__(self, dim: int, depth: int, heads: int, hidden: int, image: int, patch: int) -> None:
        super().__init__()
        self.patch_embed = RefPatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(RefBlock(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class RefSelf(nn.Module):  # BertSelfAttention
    def __init__(self, dim: int, heads: int, kv_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(kv_dim, dim), nn.Linear(kv_dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], self.heads, -1).permute(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(kv)), split(self.value(kv))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + additive_mask
        out = att.softmax(-1) @ v
        return out.permute(0, 2, 1, 3).reshape(x.shape)


class RefDenseNorm(nn.Module):  # BertSelfOutput / BertOutput: LayerNorm(dense(h) + residual)
    def __init__(self, d_in: int, dim: int) -> None:
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(d_in, dim), nn.LayerNorm(dim, eps=1e-12)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class RefBertAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int) -> None:
        super().__init__()
        self.self, self.output = RefSelf(dim, heads, kv_dim), RefDenseNorm(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, kv, mask), x)


class RefIntermediate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)


class RefBertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, enc_dim: int) -> None:
        super().__init__()
        self.attention = RefBertAttention(dim, heads, dim)
        self.crossattention = RefBertAttention(dim, heads, enc_dim)
        self.intermediate = RefIntermediate(dim, hidden)
        self.output = RefDenseNorm(hidden, dim)

    def forward(self, x: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, text_mask)
        x = self.crossattention(x, image, torch.zeros(()))  # all-ones image mask
        return self.output(nn.functional.gelu(self.intermediate.dense(x)), x)


class RefEmbeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, max_pos: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_pos, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(max_pos).expand((1, -1)))  # persistent, as upstream


class RefEncoder(nn.Module):
    def __init__(self, layers: list[RefBertLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class RefBert(nn.Module):  # blip.text_encoder (med.py BertModel, add_pooling_layer=False)
    def __init__(self, vocab: int, dim: int, depth: int, heads: int, hidden: int, max_pos: int, enc_dim: int):
        super().__init__()
        self.embeddings = RefEmbeddings(vocab, dim, max_pos)
        self.encoder = RefEncoder([RefBertLayer(dim, heads, hidden, enc_dim) for _ in range(depth)])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        x = e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(e.position_ids[:, : ids.shape[1]]))
        additive = (1.0 - mask[:, None, None, :].float()) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, additive, image)
        return x


class RefBlip(nn.Module):
    def __init__(self, vit: RefViT, bert: RefBert, vit_dim: int, text_dim: int) -> None:
        super().__init__()
        self.visual_encoder, self.text_encoder = vit, bert
        self.vision_proj, self.text_proj = nn.Linear(vit_dim, 256), nn.Linear(text_dim, 256)


class RefImageReward(nn.Module):
    def __init__(self, med: dict, vit: dict) -> None:
        super().__init__()
        self.blip = RefBlip(
            RefViT(**vit),
            RefBert(
                med["vocab_size"],
                med["hidden_size"],
                med["num_hidden_layers"],
                med["num_attention_heads"],
                med["intermediate_size"],
                med["max_position_embeddings"],
                vit["dim"],
            ),
            vit["dim"],
            med["hidden_size"],
        )
        d = med["hidden_size"]
        self.mlp = nn.Module()
        self.mlp.layers = nn.Sequential(
            nn.Linear(d, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2), nn.Linear(128, 64),
            nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        image = self.blip.visual_encoder(pixels)
        cls = self.blip.text_encoder(ids, mask, image)[:, 0, :]
        return (self.mlp.layers(cls).squeeze(-1) - MEAN) / STD


TINY_MED = {
    "vocab_size": 0,  # set from the vocabulary
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 40,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "add_cross_attention": True,
    "encoder_width": 768,
    "model_type": "bert",
}
TINY_VIT = {"dim": 128, "depth": 2, "heads": 2, "hidden": 96, "image": 32, "patch": 8}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> tuple[RefImageReward, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("imagereward")
    vocab = rw.bert_style_vocab("tiny")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    med = {**TINY_MED, "vocab_size": len(vocab) + 2}
    (folder / "med_config.json").write_text(json.dumps(med))
    torch.manual_seed(11)
    ref = RefImageReward(med, TINY_VIT).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "mlp" in name else 0.05))
    torch.save(ref.state_dict(), folder / "ImageReward.pt")
    files = {
        "checkpoint_path": folder / "ImageReward.pt",
        "med_config_path": folder / "med_config.json",
        "tokenizer_path": folder / "vocab.txt",
    }
    return ref, files


def test_reference_state_dict_has_the_upstream_key_names(upstream) -> None:
    ref, _ = upstream
    keys = set(ref.state_dict())
    # spot checks of names read from the public ImageReward / BLIP code
    for key in (
        "blip.visual_encoder.cls_token",
        "blip.visual_encoder.pos_embed",
        "blip.visual_encoder.patch_embed.proj.weight",
        "blip.visual_encoder.blocks.1.attn.qkv.bias",
        "blip.visual_encoder.blocks.0.mlp.fc2.weight",
        "blip.visual_encoder.norm.weight",
        "blip.text_encoder.embeddings.position_ids",
        "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight",
        "blip.text_encoder.encoder.layer.0.output.LayerNorm.bias",
        "blip.vision_proj.weight",
        "mlp.layers.7.bias",
    ):
        assert key in keys
    parts = ckpt_map.split_checkpoint(ref.state_dict(), source="ref")
    assert sorted(parts.unused) == sorted(
        [
            ckpt_map.POSITION_IDS,
            "blip.vision_proj.weight",
            "blip.vision_proj.bias",
            "blip.text_proj.weight",
            "blip.text_proj.bias",
        ]
    )
    assert len(parts.vision) + len(parts.text) + len(parts.head) + len(parts.unused) == len(keys)


def test_imagereward_matches_the_upstream_forward(upstream) -> None:
    from transformers import BertTokenizer

    ref, files = upstream
    images = smooth_images(4, 48, 40, seed=12)
    reward = REWARDS.get("imagereward")(**files)
    out = reward(images=images, prompts=PROMPTS)
    assert out.scores.shape == (4,) and out.scores.dtype == torch.float32

    tok = BertTokenizer(vocab=str(files["tokenizer_path"]))
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    t = tok(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert t["input_ids"].shape == (4, 35) and (t["input_ids"][:, 0] == 2).all()  # [CLS] first
    with torch.no_grad():
        expected = ref(reward.preprocess(images), t["input_ids"], t["attention_mask"])
    torch.testing.assert_close(out.scores, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.details["mlp"], expected * STD + MEAN, atol=1e-4, rtol=1e-4)
    assert out.scores.std() > 1e-3  # the prompts and images matter


def test_imagereward_batching_and_prompt_dependence(upstream) -> None:
    _, files = upstream
    images = smooth_images(4, seed=13)
    a = REWARDS.get("imagereward")(**files, batch_size=4)(images=images, prompts=PROMPTS).scores
    b = REWARDS.get("image-reward")(**files, batch_size=1)(images=images, prompts=PROMPTS).scores
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    swapped = REWARDS.get("imagereward")(**files)(images=images, prompts=PROMPTS[::-1]).scores
    assert not torch.allclose(a, swapped)


def test_unmapped_and_missing_keys_are_listed(upstream, tmp_path: Path) -> None:
    ref, files = upstream
    state = ref.state_dict()
    state["blip.itm_head.weight"] = torch.zeros(2, 32)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(ShapeError, match=r"cannot be mapped: \['blip.itm_head.weight'\]"):
        REWARDS.get("imagereward")(**{**files, "checkpoint_path": tmp_path / "extra.pt"})

    state = ref.state_dict()
    del state["blip.visual_encoder.blocks.1.attn.proj.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ShapeError, match=r"missing 1 \['blip.visual_encoder.blocks.1.attn.proj.bias'\]"):
        REWARDS.get("imagereward")(**{**files, "checkpoint_path": tmp_path / "missing.pt"})

    state = ref.state_dict()
    del state["blip.text_encoder.encoder.layer.1.crossattention.output.dense.weight"]
    torch.save(state, tmp_path / "missing_text.pt")
    with pytest.raises(ShapeError, match=r"crossattention\.output\.dense\.weight"):
        REWARDS.get("imagereward")(**{**files, "checkpoint_path": tmp_path / "missing_text.pt"})


def test_tokenizer_and_config_mismatches_are_explained(upstream, tmp_path: Path) -> None:
    _, files = upstream
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(ShapeError, match="bert-base-uncased's vocab.txt"):
        REWARDS.get("imagereward")(**{**files, "tokenizer_path": tmp_path / "vocab.txt"})
    med = json.loads(files["med_config_path"].read_text())
    med["hidden_size"] = 48
    (tmp_path / "med_config.json").write_text(json.dumps(med))
    with pytest.raises(ShapeError, match="wrong shape"):
        REWARDS.get("imagereward")(**{**files, "med_config_path": tmp_path / "med_config.json"})


def test_real_size_key_names_all_map_both_ways() -> None:
    """Every parameter of the real-size BLIP ViT-L / BERT-base modules has an upstream name and back."""
    from accelerate import init_empty_weights
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    spec = rw.IMAGEREWARD_SIZES["blip-large"]
    with init_empty_weights():
        vision = BlipVisionModel(BlipVisionConfig(**spec["vision"]))
        text = BlipTextModel(BlipTextConfig(**spec["med"], encoder_hidden_size=1024), add_pooling_layer=False)
    upstream = ckpt_map.to_upstream_state_dict(vision.state_dict(), text.state_dict(), {})
    assert len(upstream) == len(vision.state_dict()) + len(text.state_dict())
    assert "blip.visual_encoder.blocks.23.attn.qkv.weight" in upstream
    assert "blip.text_encoder.encoder.layer.11.crossattention.self.value.weight" in upstream
    assert upstream["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"].shape == (768, 1024)
    for key in upstream:
        target, name = ckpt_map.map_key(key)
        assert ckpt_map.unmap_key(target, name) == key


def test_random_weights_writer_loads_strictly(tmp_path: Path) -> None:
    files = rw.write_imagereward(tmp_path, "tiny", seed=3)
    reward = REWARDS.get("imagereward")(**files)
    assert reward(images=smooth_images(2), prompts=PROMPTS[:2]).scores.isfinite().all()


def test_imagereward_offline_without_weights_fails_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_empty_hf_cache(monkeypatch, tmp_path)
    assert_fast_missing_weights(
        REWARDS.get("imagereward"),
        "THUDM/ImageReward/ImageReward.pt",
        "TDMBENCH_IMAGEREWARD_CHECKPOINT",
        "imagereward.checkpoint_path",
    )
    cls = REWARDS.get("imagereward")
    assert {w.key for w in cls.weight_files} == {
        "imagereward.checkpoint",
        "imagereward.med_config",
        "imagereward.tokenizer",
    }


def test_imagereward_survives_pickling(upstream) -> None:
    import pickle

    _, files = upstream
    reward = REWARDS.get("imagereward")(**files)
    clone = pickle.loads(pickle.dumps(reward))
    images = smooth_images(2, seed=15)
    torch.testing.assert_close(
        clone(images=images, prompts=PROMPTS[:2]).scores, reward(images=images, prompts=PROMPTS[:2]).scores
    )
