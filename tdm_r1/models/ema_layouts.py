"""The parameter order of the published TDM / TDM-R1 EMA checkpoints, and loading by it.

A TDM / TDM-R1 EMA checkpoint is ``{"ema_parameters": [tensor, ...]}``: the LoRA tensors of one
peft adapter in the publisher's ``named_parameters`` order, without their names. Every tensor of
the SD3.5-Medium LoRA is (32, 1536) or (1536, 32), so a list in another order (``to_q`` and
``to_k`` swapped, or a diffusers release that registers the attention projections in another
order) passes every count and shape check and loads wrong weights without a word.

This module stores, for each published checkpoint, the names in the order the publisher's code
produced them (an :class:`EmaLayout`, pinned by a sha256 of the names), so that
:meth:`~tdm_r1.models.roles.LoraRoles.load_tdm_ema` places each tensor by name: the same names
in another order on this diffusers are put where they belong (and logged); other names are
refused before anything is copied.

Where the orders come from (the publisher's code, then the architecture built on the meta device
with the real ``config.json``; ``tests/models/test_ema_layouts.py`` re-derives them):

* ``tdm-sd3.5-medium.lora``: TDM-R1 loads the TDM SD3.5 LoRA into its generator adapter ``tdm``
  (Luo-Yihong/TDM-R1@cc55d89, scripts/train_tdmr1_pub.py: ``LoraConfig(r=32, lora_alpha=64,
  target_modules=[attn.add_k_proj, ...])``, the trainable parameters in ``named_parameters``
  order, ``ema.load`` + ``copy_ema_to``) with diffusers 0.33.1 and peft 0.10.0 (its setup.py).
  Per joint block: to_q, to_k, to_v, add_k_proj, add_v_proj, add_q_proj, to_out.0, to_add_out
  (the order ``diffusers.models.attention_processor.Attention.__init__`` registers them; the last
  block is ``context_pre_only`` and has no to_add_out). diffusers 0.33.1, 0.36.0 and 0.42.1 give
  the same order.
* ``tdm-r1-z-image.lora``: the TDM-R1 README (Luo-Yihong/TDM-R1@6b4c455, README.md: ``load_ema``
  over ``named_parameters`` with the adapter ``tdmr1``, targets to_q, to_k, to_v, to_out.0,
  add_k_proj, add_v_proj on ``ZImagePipeline``, diffusers >= 0.36): noise_refiner 0-1, then
  context_refiner 0-1, then layers 0-29, each ``attention.{to_q, to_k, to_v, to_out.0}``
  (Z-Image's blocks have no add_k_proj / add_v_proj). diffusers 0.36.0 and 0.42.1 agree.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tdm_r1.errors import ShapeError

log = logging.getLogger(__name__)

#: (module-name pattern with ``{i}``, block indices, projections in registration order)
Group = tuple[str, tuple[int, ...], tuple[str, ...]]


def expand(groups: Sequence[Group]) -> tuple[str, ...]:
    """Tensor names (``<module>.lora_A.weight``, ``<module>.lora_B.weight`` per module) in order."""
    return tuple(
        f"{pattern.format(i=i)}.{proj}.lora_{ab}.weight"
        for pattern, indices, projections in groups
        for i in indices
        for proj in projections
        for ab in ("A", "B")
    )


def names_digest(names: Sequence[str]) -> str:
    """sha256 of the names joined by newlines: what pins a layout."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


@dataclass(frozen=True)
class EmaLayout:
    """The parameter names of one EMA checkpoint's tensor list, in the list's order.

    Attributes:
        key: the checkpoint's weight-file key (``tdm_r1.weights.WeightFile.key``).
        names: tensor names as :func:`tdm_r1.models.roles.file_key` writes them (no adapter name).
        sha256: :func:`names_digest` of ``names``; checked whenever the layout is used.
        source: where the order comes from.
    """

    key: str
    names: tuple[str, ...]
    sha256: str
    source: str = ""

    def check(self) -> None:
        """Raise :class:`ShapeError` unless the recorded parameter names match their sha256."""
        if names_digest(self.names) != self.sha256:
            raise ShapeError(
                f"EMA layout {self.key}: its names do not match the recorded sha256 {self.sha256[:16]}... "
                "(the stored order was edited); restore tdm_r1/models/ema_layouts.py"
            )


_SD3_JOINT = ("to_q", "to_k", "to_v", "add_k_proj", "add_v_proj", "add_q_proj", "to_out.0", "to_add_out")
_Z_IMAGE = ("to_q", "to_k", "to_v", "to_out.0")
_SD35_NAMES = expand(
    [
        ("transformer_blocks.{i}.attn", tuple(range(23)), _SD3_JOINT),
        ("transformer_blocks.{i}.attn", (23,), _SD3_JOINT[:-1]),  # context_pre_only: no to_add_out
    ]
)
_Z_IMAGE_NAMES = expand(
    [
        ("noise_refiner.{i}.attention", (0, 1), _Z_IMAGE),
        ("context_refiner.{i}.attention", (0, 1), _Z_IMAGE),
        ("layers.{i}.attention", tuple(range(30)), _Z_IMAGE),
    ]
)

#: weight-file key -> layout of the published checkpoints (see the module docstring).
LAYOUTS: dict[str, EmaLayout] = {
    layout.key: layout
    for layout in (
        EmaLayout(
            key="tdm-sd3.5-medium.lora",
            names=_SD35_NAMES,
            sha256="c48c28d0583ef791d0334ee12dbe48c36da3b16bff7e0f47f5222905911ea621",
            source="TDM-R1 train_tdmr1_pub.py adapter 'tdm' on SD3Transformer2DModel (diffusers 0.33.1)",
        ),
        EmaLayout(
            key="tdm-r1-z-image.lora",
            names=_Z_IMAGE_NAMES,
            sha256="e7463939fb8ee402e75e8e57bf304654a4370cd6d2e8432167daa38b91897d3b",
            source="TDM-R1 README load_ema, adapter 'tdmr1' on ZImageTransformer2DModel (diffusers >= 0.36)",
        ),
    )
}


def layout_for(lora: Any) -> EmaLayout | None:
    """The stored layout of a preset's ``lora`` (a ``WeightFile`` with a known key), else None."""
    return LAYOUTS.get(getattr(lora, "key", None) or "")


def order_by_layout(
    tensors: Sequence[Any], model_names: Sequence[str], layout: EmaLayout, *, source: str
) -> list[Any]:
    """``tensors`` (in ``layout`` order) rearranged into ``model_names`` order.

    Raises :class:`ShapeError` before anything is copied when the count or the set of names
    differs (another rank, other target modules, another architecture).
    """
    layout.check()
    if len(tensors) != len(layout.names):
        raise ShapeError(
            f"{source} has {len(tensors)} tensors but its published layout {layout.key} has "
            f"{len(layout.names)}: this is not that checkpoint (or it was saved with another LoRA layout)"
        )
    missing = sorted(set(layout.names) - set(model_names))
    extra = sorted(set(model_names) - set(layout.names))
    if missing or extra or len(model_names) != len(layout.names):
        raise ShapeError(
            f"{source}: the role's LoRA tensors are not those of {layout.key} ({layout.source}): "
            f"{len(missing)} of the checkpoint's names are absent on this model (e.g. {missing[:3]}), "
            f"{len(extra)} of the model's are not in the checkpoint (e.g. {extra[:3]}). Nothing was loaded; "
            "the role must use the checkpoint's rank and target modules."
        )
    if list(model_names) != list(layout.names):
        first = next(i for i, (a, b) in enumerate(zip(model_names, layout.names, strict=True)) if a != b)
        log.info(
            "%s: this diffusers orders the LoRA tensors differently from the publisher's (first at %d: %s "
            "here, %s in the checkpoint); tensors are placed by name",
            source,
            first,
            model_names[first],
            layout.names[first],
        )
    position = {name: i for i, name in enumerate(layout.names)}
    return [tensors[position[name]] for name in model_names]
