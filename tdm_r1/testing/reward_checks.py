"""Helpers shared by the model-reward tests (not a test module)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tdm_r1.errors import MissingWeightsError

PROMPTS = ["a photo of a cat", "two dogs on a red sign", "a blue sign", "the cat of the dog"]


def smooth_images(n: int, h: int = 48, w: int = 40, seed: int = 0) -> torch.Tensor:
    """(n,3,h,w) float [0,1] with some spatial structure (upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def use_empty_hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the Hugging Face cache at an empty folder and go offline."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def assert_fast_missing_weights(build: Callable[[], object], *must_mention: str) -> str:
    """``build()`` must raise MissingWeightsError within 5 s whose message names ``must_mention``."""
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        build()
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    for text in must_mention:
        assert text in msg, f"{text!r} not in: {msg}"
    return msg
