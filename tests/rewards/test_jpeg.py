from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tdm_r1.registry import REWARDS
from tdm_r1.rewards.jpeg import JpegCompressibility


def test_flat_beats_noise_and_exact_value() -> None:
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 64, 64), 0.5)
    noise = torch.rand((1, 3, 64, 64), generator=gen)
    reward = REWARDS.get("jpeg-compressibility")()
    out = reward(images=torch.cat([flat, noise]), prompts=["", ""])
    assert out.scores[0] > out.scores[1]

    # independent computation: uint8 by rounding, PIL JPEG quality 95
    arr = (noise[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    expected = -(len(buf.getvalue()) / 1000) / 500
    assert out.scores[1].item() == pytest.approx(expected, rel=1e-6)
    assert out.details["jpeg_bytes"][1] == len(buf.getvalue())
    assert "500 kB" in JpegCompressibility.scale


def test_alias() -> None:
    assert REWARDS.canonical("jpeg_compressibility") == "jpeg-compressibility"
