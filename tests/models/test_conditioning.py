"""Conditioning batches: indexing, concatenation with padding, repetition."""

from __future__ import annotations

import pytest
import torch

from tdm_r1.errors import ShapeError
from tdm_r1.models.conditioning import Conditioning


def _row(length: int, value: float) -> Conditioning:
    return Conditioning(
        embeds=torch.full((1, length, 2), value), mask=torch.ones(1, length, dtype=torch.bool)
    )


def test_cat_pads_rows_and_rows_drop_the_padding() -> None:
    c = Conditioning.cat([_row(3, 1.0), _row(1, 2.0), _row(2, 3.0)])
    assert c.embeds.shape == (3, 3, 2) and c.mask is not None
    assert c.mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    assert [r.shape[0] for r in c.rows()] == [3, 1, 2]
    assert torch.equal(c.embeds[1, 1:], torch.zeros(2, 2))
    sub = c[[1, 2]]  # indexing trims columns that are padding in every selected row
    assert sub.embeds.shape == (2, 2, 2) and [r.shape[0] for r in sub.rows()] == [1, 2]
    assert torch.equal(c[-1].embeds, c.embeds[2:3, :2])


def test_repeat_and_repeat_interleave_and_pooled() -> None:
    pooled = torch.arange(4.0).view(2, 2)
    c = Conditioning(embeds=torch.arange(12.0).view(2, 3, 2), pooled=pooled)
    assert c.mask is None and len(c) == 2
    assert torch.equal(c.repeat_interleave(2).pooled, pooled[[0, 0, 1, 1]])
    assert torch.equal(c.repeat(2).pooled, pooled[[0, 1, 0, 1]])
    assert Conditioning.cat([c, c]).mask is None  # equal lengths, no mask needed
    assert c.to(dtype=torch.float64).embeds.dtype == torch.float64


def test_shape_errors() -> None:
    with pytest.raises(ShapeError, match=r"\(N, L, D\)"):
        Conditioning(embeds=torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="pooled has batch 1"):
        Conditioning(embeds=torch.zeros(2, 3, 4), pooled=torch.zeros(1, 4))
    with pytest.raises(ShapeError, match="with and without pooled"):
        Conditioning.cat(
            [Conditioning(torch.zeros(1, 2, 2), torch.zeros(1, 2)), Conditioning(torch.zeros(1, 2, 2))]
        )
