"""The published TDM / TDM-R1 LoRA checkpoints, rebuilt the way their publishers' code writes them.

No weights are downloaded: the layout of each file (which tensors, in which order, of which
shapes) follows from the publisher's code and the real architecture, so a synthetic checkpoint
with exactly that layout (zeros, or any values) can be loaded through a preset's own loading path
to prove that the real file would load with 0 missing and 0 unexpected tensors.

Both files are ``torch.save(EMAModuleWrapper.state_dict())`` = ``{"decay": float,
"ema_parameters": [tensor, ...]}`` (Luo-Yihong/TDM-R1@cc55d89, flow_grpo/ema.py): the trainable
LoRA tensors of one peft adapter, in ``named_parameters`` order, without names.

* ``tdm-sd3.5-medium-4step``: ``Luo-Yihong/TDM_sd3-5_lora``, file ``tdm_sd3-5_lora.ckpt``
  (Luo-Yihong/TDM-R1@0c37f9f, config/tdmr1_clean.py: ``hf_hub_download(repo_id=
  "Luo-Yihong/TDM_sd3-5_lora", filename="tdm_sd3-5_lora.ckpt")`` as ``config.train.lora_path``).
  Loaded by Luo-Yihong/TDM-R1@cc55d89, scripts/train_tdmr1_pub.py: ``LoraConfig(r=32,
  lora_alpha=64, init_lora_weights="gaussian", target_modules=[attn.add_k_proj, attn.add_q_proj,
  attn.add_v_proj, attn.to_add_out, attn.to_k, attn.to_out.0, attn.to_q, attn.to_v])``,
  ``get_peft_model(..., adapter_name="tdm")``, the parameters with ``"tdm"`` in their name in
  ``named_parameters`` order, ``ema.load(lora_path)`` + ``ema.copy_ema_to(...)``. No
  ``set_adapters`` weight: the LoRA runs at peft's ``scaling = lora_alpha / r = 2``.
* ``z-image-4step``: ``Luo-Yihong/TDM-R1``, file ``tdmr1_zimage_ema.ckpt`` (Luo-Yihong/TDM-R1@6b4c455,
  README.md): ``LoraConfig(r=32, lora_alpha=64, init_lora_weights="gaussian", target_modules=["to_q",
  "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"])``, ``get_peft_model(pipeline.transformer,
  ..., adapter_name="tdmr1")``, ``load_ema``: the parameters with ``"tdmr1"`` in their name that
  require grad, zipped with ``state_dict["ema_parameters"]``. No scale either: ``scaling = 2``.

The TDM README's ``set_adapters(["tdm"], [0.125])`` belongs to another file (``Luo-Yihong/TDM_sd3_lora``,
SD3-Medium, a diffusers LoRA; Luo-Yihong/TDM@81b019f, README.md), not to these two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tdm_r1.testing import real_configs


@dataclass(frozen=True)
class PublishedLora:
    """How one published LoRA file was made (see the module docstring for the sources)."""

    preset: str
    model: str  # tdm_r1.testing.meta_models key
    adapter_name: str
    rank: int
    alpha: float
    targets: tuple[str, ...]
    #: the ``set_adapters`` weight the publisher applies on top of ``alpha / rank`` (none: 1)
    scale: float = 1.0

    @property
    def scaling(self) -> float:
        """What peft multiplies ``B A x`` by in the publisher's code."""
        return self.scale * self.alpha / self.rank


PUBLISHED: dict[str, PublishedLora] = {
    "tdm-sd3.5-medium-4step": PublishedLora(
        preset="tdm-sd3.5-medium-4step",
        model="sd3.5-medium",
        adapter_name="tdm",
        rank=32,
        alpha=64.0,
        targets=(
            "attn.add_k_proj",
            "attn.add_q_proj",
            "attn.add_v_proj",
            "attn.to_add_out",
            "attn.to_k",
            "attn.to_out.0",
            "attn.to_q",
            "attn.to_v",
        ),
    ),
    "z-image-4step": PublishedLora(
        preset="z-image-4step",
        model="z-image",
        adapter_name="tdmr1",
        rank=32,
        alpha=64.0,
        targets=("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"),
    ),
}


def _meta_transformer(model: str) -> torch.nn.Module:
    with torch.device("meta"):
        if model == "sd3.5-medium":
            from diffusers import SD3Transformer2DModel

            return SD3Transformer2DModel(**real_configs.SD35_MEDIUM_TRANSFORMER)
        from diffusers import ZImageTransformer2DModel

        return ZImageTransformer2DModel(**real_configs.Z_IMAGE_TRANSFORMER)


def publisher_layout(lora: PublishedLora) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of the file's ``ema_parameters`` in the order the publisher's code makes them.

    The real transformer (meta device), wrapped by peft's ``get_peft_model`` with the publisher's
    ``LoraConfig`` and adapter name, then the trainable parameters whose name holds the adapter
    name, in ``named_parameters`` order: the publisher's own recipe, not tdmbench's roles. Names
    are written as saved peft files write them (``transformer_blocks.0.attn.to_q.lora_A.weight``).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        init_lora_weights="gaussian",
        target_modules=list(lora.targets),
    )
    with torch.device("meta"):
        wrapped = get_peft_model(_meta_transformer(lora.model), config, adapter_name=lora.adapter_name)
    tag = f".{lora.adapter_name}."
    out = []
    for name, p in wrapped.named_parameters():
        if tag in name and p.requires_grad:
            key = name.removeprefix("base_model.model.").replace(tag, ".")
            out.append((key, tuple(p.shape)))
    return out


def write_synthetic_ema(
    path: str | Path,
    shapes: Sequence[tuple[int, ...]],
    *,
    decay: float = 0.9,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A checkpoint in the publisher's format: ``{"decay", "ema_parameters": [zeros of each shape]}``.

    float32 by default, as train_tdmr1_pub.py trains (its transformer is loaded without a dtype);
    the dtype is no part of the layout: the loaders cast to the role's dtype.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"decay": decay, "ema_parameters": [torch.zeros(s, dtype=dtype) for s in shapes]}, path)
    return path
