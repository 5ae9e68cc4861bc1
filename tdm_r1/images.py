"""The only tensor <-> PIL / uint8 conversions in tdmbench.

Convention everywhere: an image batch is float ``(N, 3, H, W)`` in ``[0, 1]`` on any device.
uint8 conversion rounds (``(x * 255).round()``), as the reward code of the field does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tdm_r1.errors import ShapeError

if TYPE_CHECKING:  # torch is imported lazily at call time
    import torch
    from PIL import Image


def check_images(images: torch.Tensor) -> None:
    """Raise :class:`ShapeError` unless ``images`` is float (N, 3, H, W) in [0, 1]."""
    import torch

    if not isinstance(images, torch.Tensor):
        raise ShapeError(f"images must be a torch.Tensor (N,3,H,W) in [0,1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ShapeError(f"images must have shape (N,3,H,W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ShapeError(f"images must be floating point in [0,1], got dtype {images.dtype}")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ShapeError(
            f"images must lie in [0,1], got range [{images.min().item():.3f}, {images.max().item():.3f}]"
            " (decoded VAE output in [-1,1] must be mapped with (x+1)/2)"
        )


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) float [0,1] -> (N,H,W,3) uint8 numpy."""
    check_images(images)
    arr = (images.detach().float().clamp(0, 1) * 255).round().to("cpu").numpy().astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(0, 2, 3, 1))


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    from PIL import Image

    return [Image.fromarray(a) for a in to_uint8_nhwc(images)]


def from_uint8_nhwc(arr: np.ndarray) -> torch.Tensor:
    """(N,H,W,3) uint8 -> (N,3,H,W) float32 [0,1]."""
    import torch

    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ShapeError(f"expected (N,H,W,3) uint8, got {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0


def from_pil(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> (N,3,H,W) float32 [0,1]."""
    if not images:
        raise ShapeError("from_pil needs at least one image")
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ShapeError(f"images must share one size to be batched, got {sorted(sizes)}")
    return from_uint8_nhwc(np.stack([np.asarray(im.convert("RGB")) for im in images]))


def load_image(path: str | Path) -> torch.Tensor:
    """Read one image file -> (1,3,H,W) float32 [0,1].

    Raises OSError for every unreadable file, including one whose header claims more pixels than
    PIL reads safely (``DecompressionBombError``, which is not an OSError in PIL).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return from_pil([im.convert("RGB")])
    except Image.DecompressionBombError as exc:
        raise OSError(f"{path}: {exc}") from exc


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """Save one (3,H,W) or (1,3,H,W) image as PNG."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    to_pil(image)[0].save(path, format="PNG")


def png_bytes(image: torch.Tensor) -> bytes:
    import io

    if image.ndim == 3:
        image = image.unsqueeze(0)
    buf = io.BytesIO()
    to_pil(image)[0].save(buf, format="PNG")
    return buf.getvalue()
