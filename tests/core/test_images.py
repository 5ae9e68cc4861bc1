from __future__ import annotations

import numpy as np
import pytest
import torch

from tdm_r1.errors import ShapeError
from tdm_r1.images import from_pil, from_uint8_nhwc, load_image, save_png, to_pil, to_uint8_nhwc


def test_uint8_roundtrip_is_exact() -> None:
    arr = np.random.default_rng(0).integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    images = from_uint8_nhwc(arr)
    assert images.shape == (2, 3, 5, 7) and images.dtype == torch.float32
    assert np.array_equal(to_uint8_nhwc(images), arr)
    assert np.array_equal(to_uint8_nhwc(from_pil(to_pil(images))), arr)


def test_rounding_matches_the_field_convention() -> None:
    x = torch.full((1, 3, 1, 1), 0.5)
    assert to_uint8_nhwc(x)[0, 0, 0, 0] == 128  # round(127.5) = 128


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(3, 4, 4),
        torch.zeros(1, 4, 4, 4),
        torch.zeros(1, 3, 4, 4, dtype=torch.uint8),
        torch.full((1, 3, 2, 2), -1.0),
    ],
)
def test_bad_images_raise(bad: torch.Tensor) -> None:
    with pytest.raises(ShapeError):
        to_uint8_nhwc(bad)


def test_png_roundtrip(tmp_path) -> None:
    img = torch.rand(3, 8, 9)
    save_png(img, tmp_path / "a.png")
    back = load_image(tmp_path / "a.png")
    assert back.shape == (1, 3, 8, 9)
    assert torch.allclose(back[0], (img * 255).round() / 255, atol=1e-6)
