"""CLIP-style image preprocessing of float image batches, done in torch on the model's device.

The reward models of the field (PickScore, HPS, CLIP, the LAION aesthetic predictor, BLIP in
ImageReward) all see: the image as uint8 -> resize of the shorter side to ``size`` (bicubic,
antialiased) -> centre crop to ``crop`` -> scale to [0,1] -> ``(x - mean) / std``. The peers
do it on PIL images one at a time; here the batch is quantised to the uint8 grid once (through
:mod:`tdm_r1.images`, with the field's ``round()`` convention) and resized with torch's
antialiased bicubic, which is what torchvision and transformers' torchvision backend do on
tensors. Results agree with the PIL path (HF processors, open_clip's ``preprocess_val``) within
about one uint8 step before normalisation: PIL rounds the resized image to uint8 again and its
bicubic kernel differs slightly; this path keeps the resized image in float.

HPS v2.1 is the exception: its official ``preprocess_val`` (HPSv2's open_clip fork,
``image_transform(..., resize_longest_max=True)``) letterboxes instead of cropping, see
:class:`LetterboxPreprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tdm_r1.errors import ConfigError
from tdm_r1.images import check_images, from_uint8_nhwc, to_uint8_nhwc

#: OpenAI CLIP normalisation (also used by open_clip ViT-H-14, BLIP and ImageReward).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, as stored in HF image processor configs


def _as_uint8_grid(images: torch.Tensor, device: torch.device | None) -> tuple[torch.Tensor, torch.device]:
    """(N,3,H,W) in [0,1] quantised to the uint8 grid (as PIL-based reference pipelines see it) on ``device``."""
    check_images(images)
    device = device if device is not None else images.device
    return from_uint8_nhwc(to_uint8_nhwc(images)).to(device), device


def _normalise(
    x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype
) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


class _Preprocess:
    """(N,3,H,W) float in [0,1] -> uint8 grid (the processors' PIL input) -> :meth:`geometry` ->
    ``(x - mean) / std``. Subclasses are frozen dataclasses with ``mean`` / ``std`` fields."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self, images: torch.Tensor, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """(N,3,H,W) float in [0,1] -> (N,3,side,side) normalised ``dtype`` on ``device``."""
        x, device = _as_uint8_grid(images, device)
        return _normalise(self.geometry(x), self.mean, self.std, dtype)


@dataclass(frozen=True)
class ImagePreprocess(_Preprocess):
    """Resize shorter side to ``size`` (bicubic, antialiased), centre-crop ``crop``, normalise.

    Attributes:
        size: target length of the shorter side.
        crop: side of the square centre crop.
        mean, std: per-channel normalisation in [0,1] units.
    """

    size: int
    crop: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N,3,crop,crop)."""
        return center_crop(resize_shorter_side(x, self.size).clamp_(0.0, 1.0), self.crop)

    @classmethod
    def from_hf(cls, image_processor: Any) -> ImagePreprocess:
        """Read a transformers ``CLIPImageProcessor`` (either backend) config.

        Raises :class:`ConfigError` for settings this path does not reproduce (no resize, no
        crop, non-bicubic resampling), rather than silently preprocessing differently.
        """
        cfg = image_processor.to_dict() if hasattr(image_processor, "to_dict") else dict(image_processor)
        size = cfg.get("size")
        if isinstance(size, dict):
            if "shortest_edge" not in size:
                raise ConfigError(f"image processor size {size} is not a shortest-edge resize")
            size = size["shortest_edge"]
        crop = cfg.get("crop_size")
        if isinstance(crop, dict):
            if crop.get("height") != crop.get("width"):
                raise ConfigError(f"image processor crop {crop} is not square")
            crop = crop["height"]
        problems = []
        if not cfg.get("do_resize", True) or size is None:
            problems.append("do_resize is off")
        if not cfg.get("do_center_crop", True) or crop is None:
            problems.append("do_center_crop is off")
        resample = cfg.get("resample", _BICUBIC)
        if int(getattr(resample, "value", resample)) != _BICUBIC:
            problems.append(f"resample={resample} is not bicubic (3)")
        if not cfg.get("do_normalize", True) or not cfg.get("do_rescale", True):
            problems.append("do_normalize/do_rescale is off")
        if problems:
            raise ConfigError(f"unsupported image processor settings: {', '.join(problems)}")
        mean = tuple(float(v) for v in cfg.get("image_mean", CLIP_MEAN))
        std = tuple(float(v) for v in cfg.get("image_std", CLIP_STD))
        return cls(size=int(size), crop=int(crop), mean=mean, std=std)  # type: ignore[arg-type]


def resize_shorter_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N,C,H,W) -> shorter side ``size``, longer side ``int(size * long / short)`` (torchvision's rule)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,crop,crop), offsets rounded as torchvision does; pads with 0 if smaller."""
    h, w = x.shape[-2:]
    if h < crop or w < crop:
        pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
        x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        h, w = x.shape[-2:]
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return x[..., top : top + crop, left : left + crop]


@dataclass(frozen=True)
class LetterboxPreprocess(_Preprocess):
    """Resize the longer side to ``size`` (bicubic, antialiased), pad to a black square, normalise.

    The spec of HPS v2.1's official ``preprocess_val`` (HPSv2's ``ResizeMaxSize``): scale =
    ``size / max(H, W)``; new size ``(round(H * scale), round(W * scale))`` with Python's
    ``round``; zero padding (black, before normalisation) of ``pad = size - new`` per axis, split
    ``pad // 2`` before (left / top) and ``pad - pad // 2`` after (right / bottom); no crop; then
    ``(x - mean) / std`` with the OpenAI CLIP constants. One deliberate difference: the official
    transform skips resize *and* padding when the longer side already equals ``size``, which
    leaves a non-square image that the ViT cannot take; here such an image is padded too.

    Attributes:
        size: side of the square output.
        mean, std: per-channel normalisation in [0,1] units.
    """

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N,3,size,size)."""
        return letterbox(x, self.size)


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)`` of the letterbox of an ``height`` x ``width`` image."""
    scale = size / float(max(height, width))
    new_h, new_w = round(height * scale), round(width * scale)
    return new_h, new_w, (size - new_h) // 2, (size - new_w) // 2


def letterbox(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N,C,H,W) in [0,1] -> (N,C,size,size): longer side to ``size``, zero-padded (see above)."""
    h, w = x.shape[-2:]
    new_h, new_w, top, left = letterbox_geometry(h, w, size)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    return F.pad(x, (left, size - new_w - left, top, size - new_h - top))
