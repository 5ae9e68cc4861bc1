"""ImageReward-v1.0 checkpoint (``ImageReward.pt``) -> transformers BLIP modules + MLP head.

The upstream model (THUDM/ImageReward ``ImageReward/ImageReward.py``) is ``ImageReward`` with
``blip = BLIP_Pretrain(vit='large', image_size=224)`` and ``mlp = MLP(768)``; its state dict is
what ``ImageReward.pt`` stores. The upstream modules map one-to-one onto transformers classes:

* ``blip.visual_encoder`` (BLIP's timm-style ViT, fused ``qkv``, pre-norm blocks, LayerNorm
  eps 1e-6, a final ``norm`` over all tokens) -> ``BlipVisionModel`` (same fused ``qkv`` with
  the same (3, heads, head_dim) split, ``post_layernorm`` over all tokens);
* ``blip.text_encoder`` (BLIP's ``med.py`` BertModel with cross-attention in every layer,
  no pooler, no token-type embeddings) -> ``BlipTextModel(add_pooling_layer=False)`` built
  with ``is_decoder=True`` so that its layers own ``crossattention`` modules; the parameter
  names are identical;
* ``mlp.layers.{0,2,4,6,7}`` -> :class:`~tdm_r1.rewards.linear_mlp.LinearMLP`.

Keys the reward does not use and that the upstream loader (``strict=False``) ignores as well:
the contrastive projections ``blip.vision_proj`` / ``blip.text_proj``, and the
``embeddings.position_ids`` buffer (checked to be ``arange``; transformers keeps it
non-persistent). Every other key must map, and every target parameter must be filled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from tdm_r1.errors import ShapeError
from tdm_r1.rewards.checkpoints import state_dict_mismatch

VISION = "vision"
TEXT = "text"
HEAD = "head"

VISION_PREFIX = "blip.visual_encoder."
TEXT_PREFIX = "blip.text_encoder."
HEAD_PREFIX = "mlp."
#: Upstream keys that exist in the checkpoint but take no part in the reward.
UNUSED_PATTERNS: tuple[str, ...] = (r"blip\.vision_proj\.(weight|bias)", r"blip\.text_proj\.(weight|bias)")
POSITION_IDS = "blip.text_encoder.embeddings.position_ids"

# (upstream name relative to blip.visual_encoder., transformers name relative to BlipVisionModel);
# {i} is a block index, {p} is weight or bias.
_VISION_NAMES: tuple[tuple[str, str], ...] = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.{p}", "embeddings.patch_embedding.{p}"),
    ("blocks.{i}.norm1.{p}", "encoder.layers.{i}.layer_norm1.{p}"),
    ("blocks.{i}.attn.qkv.{p}", "encoder.layers.{i}.self_attn.qkv.{p}"),
    ("blocks.{i}.attn.proj.{p}", "encoder.layers.{i}.self_attn.projection.{p}"),
    ("blocks.{i}.norm2.{p}", "encoder.layers.{i}.layer_norm2.{p}"),
    ("blocks.{i}.mlp.fc1.{p}", "encoder.layers.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.mlp.fc2.{p}", "encoder.layers.{i}.mlp.fc2.{p}"),
    ("norm.{p}", "post_layernorm.{p}"),
)
_FIELDS = {"i": r"\d+", "p": "weight|bias"}


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w)\}", template)  # literal, field, literal, field, ...
    regex = "".join(re.escape(x) if n % 2 == 0 else f"(?P<{x}>{_FIELDS[x]})" for n, x in enumerate(parts))
    return re.compile(regex)


_TO_HF = [(_template_regex(up), hf) for up, hf in _VISION_NAMES]
_TO_UPSTREAM = [(_template_regex(hf), up) for up, hf in _VISION_NAMES]


def _translate(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for regex, template in rules:
        m = regex.fullmatch(name)
        if m:
            return template.format(**m.groupdict())
    return None


def map_key(key: str) -> tuple[str, str] | None:
    """Upstream ImageReward key -> (target module, transformers parameter name), None if unmapped.

    Target is :data:`VISION`, :data:`TEXT` or :data:`HEAD`. Unused keys also return None; use
    :func:`is_unused` to tell them apart.
    """
    if key.startswith(VISION_PREFIX):
        name = _translate(key[len(VISION_PREFIX) :], _TO_HF)
        return (VISION, name) if name is not None else None
    if key.startswith(TEXT_PREFIX) and key != POSITION_IDS:
        return TEXT, key[len(TEXT_PREFIX) :]
    if key.startswith(HEAD_PREFIX) and re.fullmatch(r"layers\.\d+\.(weight|bias)", key[len(HEAD_PREFIX) :]):
        return HEAD, key[len(HEAD_PREFIX) :]
    return None


def is_unused(key: str) -> bool:
    return key == POSITION_IDS or any(re.fullmatch(p, key) for p in UNUSED_PATTERNS)


def unmap_key(target: str, name: str) -> str:
    """Inverse of :func:`map_key`: (target, transformers name) -> upstream key."""
    if target == TEXT:
        return TEXT_PREFIX + name
    if target == HEAD:
        return HEAD_PREFIX + name
    upstream = _translate(name, _TO_UPSTREAM) if target == VISION else None
    if upstream is None:
        raise ValueError(f"no upstream ImageReward name for {target} parameter {name!r}")
    return VISION_PREFIX + upstream


@dataclass
class SplitCheckpoint:
    """An ImageReward state dict split by target, in transformers names."""

    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    text: dict[str, torch.Tensor] = field(default_factory=dict)
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def part(self, target: str) -> dict[str, torch.Tensor]:
        return {VISION: self.vision, TEXT: self.text, HEAD: self.head}[target]


def split_checkpoint(state: Mapping[str, torch.Tensor], *, source: str) -> SplitCheckpoint:
    """Map every key of an ImageReward state dict; raise :class:`ShapeError` listing unmapped keys."""
    out = SplitCheckpoint()
    unmapped: list[str] = []
    for key, value in state.items():
        mapped = map_key(key)
        if mapped is not None:
            out.part(mapped[0])[mapped[1]] = value
        elif is_unused(key):
            out.unused.append(key)
        else:
            unmapped.append(key)
    if unmapped:
        raise ShapeError(
            f"{source}: {len(unmapped)} of {len(state)} keys are not ImageReward-v1.0 keys and cannot be "
            f"mapped: {sorted(unmapped)[:15]}{' ...' if len(unmapped) > 15 else ''}. Expected keys under "
            f"{VISION_PREFIX!r}, {TEXT_PREFIX!r} and {HEAD_PREFIX!r} (plus the unused blip.vision_proj / "
            "blip.text_proj)."
        )
    for target in (VISION, TEXT, HEAD):
        if not out.part(target):
            raise ShapeError(f"{source}: no {target} weights found; is this ImageReward.pt?")
    if POSITION_IDS in state:
        pos = state[POSITION_IDS]
        if not torch.equal(pos.reshape(-1).long().cpu(), torch.arange(pos.numel())):
            raise ShapeError(f"{source}: {POSITION_IDS} is not 0..n-1; the text encoder would be misread")
    return out


def load_strict(
    module: torch.nn.Module, params: Mapping[str, torch.Tensor], *, what: str, source: str
) -> None:
    """Assign ``params`` to ``module`` requiring the exact parameter/persistent-buffer set and shapes."""
    missing, extra, wrong = state_dict_mismatch(module, params)
    if missing or extra or wrong:
        upstream = [unmap_key(what, k) for k in missing[:10]]
        raise ShapeError(
            f"{source}: the {what} weights do not fit the architecture built from the checkpoint shapes and "
            f"med_config.json: missing {len(missing)} {upstream}, unexpected {len(extra)} "
            f"{[unmap_key(what, k) for k in extra[:10]]}, wrong shape {wrong[:5]}"
        )
    module.load_state_dict(dict(params), strict=True, assign=True)


def to_upstream_state_dict(
    vision: Mapping[str, torch.Tensor],
    text: Mapping[str, torch.Tensor],
    head: Mapping[str, torch.Tensor],
    extra: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """transformers-named parts -> one state dict with the upstream ImageReward key names."""
    out: dict[str, torch.Tensor] = {}
    for target, part in ((VISION, vision), (TEXT, text), (HEAD, head)):
        for name, value in part.items():
            out[unmap_key(target, name)] = value
    out.update(extra or {})
    return out
