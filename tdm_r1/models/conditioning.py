"""Text conditioning of a batch of prompts: :class:`Conditioning` (embeddings, pooled, mask).

Its own module so that the sampler, the adapters and the trainer share it without importing
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tdm_r1.errors import ShapeError


@dataclass
class Conditioning:
    """Text conditioning for a batch of N prompts.

    Attributes:
        embeds: (N, L, D) token embeddings.
        pooled: (N, P) pooled embeddings (SD3) or None.
        mask: (N, L) bool, True for real tokens, or None when every row uses all L tokens
            (Z-Image keeps only real tokens; rows of different lengths are right-padded).
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.embeds.shape[0]
        if self.embeds.ndim != 3:
            raise ShapeError(f"Conditioning.embeds must be (N, L, D), got {tuple(self.embeds.shape)}")
        if self.pooled is not None and self.pooled.shape[0] != n:
            raise ShapeError(f"pooled has batch {self.pooled.shape[0]}, embeds {n}")
        if self.mask is not None and tuple(self.mask.shape) != tuple(self.embeds.shape[:2]):
            raise ShapeError(
                f"mask must be (N, L) = {tuple(self.embeds.shape[:2])}, got {tuple(self.mask.shape)}"
            )

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def device(self) -> torch.device:
        """The device the embeddings are on."""
        return self.embeds.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embeds.dtype

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> Conditioning:
        """Rows of the batch (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=self.embeds.device)
        return Conditioning(
            embeds=self.embeds[index],
            pooled=None if self.pooled is None else self.pooled[index],
            mask=None if self.mask is None else self.mask[index],
        ).trimmed()

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the batch; rows are right-padded (zeros, mask False) to the longest."""
        if not items:
            raise ShapeError("Conditioning.cat needs at least one item")
        length = max(c.embeds.shape[1] for c in items)
        has_pooled = {c.pooled is not None for c in items}
        if len(has_pooled) != 1:
            raise ShapeError("cannot concatenate conditionings with and without pooled embeddings")
        needs_mask = any(c.mask is not None for c in items) or len({c.embeds.shape[1] for c in items}) > 1
        embeds, masks = [], []
        for c in items:
            pad = length - c.embeds.shape[1]
            e = c.embeds
            m = c.mask if c.mask is not None else torch.ones(e.shape[:2], dtype=torch.bool, device=e.device)
            if pad:
                e = torch.cat([e, e.new_zeros(e.shape[0], pad, e.shape[2])], dim=1)
                m = torch.cat([m, m.new_zeros(m.shape[0], pad)], dim=1)
            embeds.append(e)
            masks.append(m)
        return Conditioning(
            embeds=torch.cat(embeds),
            pooled=torch.cat([c.pooled for c in items]) if items[0].pooled is not None else None,  # type: ignore[misc]
            mask=torch.cat(masks) if needs_mask else None,
        )

    def repeat_interleave(self, repeats: int) -> Conditioning:
        """Each row ``repeats`` times in a row: (N, ...) -> (N * repeats, ...)."""
        return Conditioning(
            embeds=self.embeds.repeat_interleave(repeats, dim=0),
            pooled=None if self.pooled is None else self.pooled.repeat_interleave(repeats, dim=0),
            mask=None if self.mask is None else self.mask.repeat_interleave(repeats, dim=0),
        )

    def repeat(self, times: int) -> Conditioning:
        """The whole batch ``times`` times: (N, ...) -> (times * N, ...)."""
        return Conditioning.cat([self] * times)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> Conditioning:
        """Move; ``dtype`` applies to the float tensors only."""
        return Conditioning(
            embeds=self.embeds.to(device=device, dtype=dtype),
            pooled=None if self.pooled is None else self.pooled.to(device=device, dtype=dtype),
            mask=None if self.mask is None else self.mask.to(device=device),
        )

    def detach(self) -> Conditioning:
        return Conditioning(
            embeds=self.embeds.detach(),
            pooled=None if self.pooled is None else self.pooled.detach(),
            mask=self.mask,
        )

    def trimmed(self) -> Conditioning:
        """Drop trailing columns that are padding in every row."""
        if self.mask is None or self.mask.shape[1] == 0:
            return self
        used = self.mask.any(dim=0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 0
        if length == self.mask.shape[1]:
            return self
        return Conditioning(self.embeds[:, :length], self.pooled, self.mask[:, :length])

    def rows(self) -> list[torch.Tensor]:
        """Per-row (L_i, D) embeddings without padding (Z-Image's list input)."""
        if self.mask is None:
            return list(self.embeds.unbind(0))
        return [e[m] for e, m in zip(self.embeds, self.mask, strict=True)]
