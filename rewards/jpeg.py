"""JPEG compressibility reward (``jpeg-compressibility``), as in DDPO / Flow-GRPO.

score = -(size of the image saved as JPEG quality 95, in bytes / 1000) / 500, i.e. the negative
JPEG size in units of 500 kB. Higher (closer to 0) = more compressible = simpler image. No weights.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from tdm_r1.images import to_pil
from tdm_r1.registry import register_reward
from tdm_r1.rewards.base import Reward, RewardOutput

JPEG_QUALITY = 95


def jpeg_size(image: Any, quality: int = JPEG_QUALITY) -> int:
    """Bytes of a PIL image saved as JPEG at ``quality`` (PIL defaults otherwise)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.tell()


@register_reward("jpeg-compressibility", aliases=("jpeg_compressibility",))
class JpegCompressibility(Reward):
    """Negative JPEG (quality 95) size in units of 500 kB; detail ``jpeg_bytes``."""

    name = "jpeg-compressibility"
    base_version = "1"
    higher_is_better = True
    scale = "negative JPEG q95 size in units of 500 kB: -(bytes/1000)/500 (higher = more compressible)"

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        sizes = [jpeg_size(im) for im in to_pil(images)]
        scores = torch.tensor([-(b / 1000) / 500 for b in sizes], dtype=torch.float32)
        return RewardOutput(scores, {"jpeg_bytes": sizes})
