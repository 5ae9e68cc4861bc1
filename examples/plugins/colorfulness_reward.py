"""A reward from outside the package: the colourfulness of an image (Hasler & Suesstrunk, 2003).

The walk-through of docs/extending.md ("Add a reward"), run by tests/project/test_extending.py. With the
opponent channels rg = R - G and yb = (R + G) / 2 - B of every pixel (values in [0, 1]), the metric
is ``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)`` (Hasler & Suesstrunk,
"Measuring colourfulness in natural images", SPIE 5007, 2003, eq. 3 with its parameter 0.3; they
use 8-bit values, so their M is 255 times this one). A grey image scores 0.

    tdmbench --plugin examples/plugins/colorfulness_reward.py score images --reward colorfulness --out c.csv
"""

from __future__ import annotations

from typing import Any

import torch

from tdm_r1.registry import register_reward
from tdm_r1.rewards.base import Reward, RewardOutput


def colorfulness(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N,) Hasler-Suesstrunk colourfulness (0 for grey)."""
    r, g, b = images.float().unbind(dim=1)  # (N, H, W) each
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    sigma = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mu = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return sigma + 0.3 * mu


@register_reward("colorfulness")
class Colorfulness(Reward):
    """Hasler-Suesstrunk colourfulness of the image (no weights, no prompt)."""

    name = "colorfulness"
    base_version = "1"
    higher_is_better = True
    scale = "Hasler-Suesstrunk M on [0, 1] RGB: std + 0.3 * mean of the rg / yb opponent channels"

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        return RewardOutput(colorfulness(images), {})
