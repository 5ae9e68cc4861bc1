"""Base class of rewards backed by a neural network: device/dtype options and chunked scoring.

Every such reward takes ``device`` (default: cuda when visible, see ``tdm_r1.devices``) and ``dtype``
(default float32) and scores in chunks of ``batch_size`` images under ``torch.no_grad()``.
Subclasses implement :meth:`ModelReward.score_batch`; chunking never changes a score (models run in eval mode and
every sample is scored independently of its neighbours).
"""

from __future__ import annotations

from typing import Any

import torch

from tdm_r1.devices import resolve_device, resolve_dtype
from tdm_r1.errors import ConfigError
from tdm_r1.rewards.base import Reward, RewardOutput


class ModelReward(Reward):
    """A reward computed by a model; subclasses load it in ``__init__`` and implement ``score_batch``.

    Args:
        device: where the model runs (default: cuda when visible, else CPU; see ``tdm_r1.devices``).
        dtype: model weight dtype (default float32).
        batch_size: images per forward pass (memory bound; does not change scores).
    """

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        batch_size: int,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        if int(batch_size) < 1:
            raise ConfigError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def score_batch(
        self, images: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Score one chunk. ``images`` (n,3,H,W) float [0,1] on any device -> scores (n,) and
        detail columns (n,) each."""
        raise NotImplementedError

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        scores: list[torch.Tensor] = []
        details: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                stop = start + self.batch_size
                s, d = self.score_batch(images[start:stop], prompts[start:stop])
                scores.append(s.detach().float().cpu().reshape(-1))
                for key, col in d.items():
                    details.setdefault(key, []).append(col.detach().float().cpu().reshape(-1))
        if not scores:
            return RewardOutput(torch.zeros(0), {})
        return RewardOutput(torch.cat(scores), {k: torch.cat(v) for k, v in details.items()})

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
