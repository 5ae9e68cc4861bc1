"""The VAE between pixels and the transformer's latent space (diffusers ``AutoencoderKL``).

Latents in tdmbench are the transformer's: ``(z - shift_factor) * scaling_factor`` of the VAE's
own latents; images are float (N, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn


def scale_factor(vae: nn.Module | None) -> int:
    """Pixels per latent cell (8 when there is no VAE: every supported family uses 8)."""
    if vae is None:
        return 8
    return 2 ** (len(vae.config.block_out_channels) - 1)


def set_channels_last(vae: nn.Module, enabled: bool) -> None:
    """Switch the VAE between channels-last and contiguous memory format (same math)."""
    vae.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)


def decode(
    vae: nn.Module,
    latents: torch.Tensor,
    *,
    device: torch.device,
    channels_last: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """(N, C, h, w) latents -> (N, 3, H, W) float32 images in [0, 1] (scaling / shift undone).

    ``batch_size`` decodes in chunks (bounds the VAE's activation memory at high resolution).
    """
    scale, shift = _factors(vae)
    chunks = [latents] if not batch_size else list(latents.split(batch_size))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    for z in chunks:
        z = (z.to(device, vae.dtype) / scale + shift).contiguous(memory_format=fmt)
        x = vae.decode(z, return_dict=False)[0]
        out.append((x.float() * 0.5 + 0.5).clamp(0, 1))
    return torch.cat(out)


def encode(
    vae: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device,
    sample_posterior: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] -> (N, C, h, w) float32 latents in the transformer's space.

    Uses the posterior mean unless ``sample_posterior`` (then ``generator`` seeds the draw).
    """
    scale, shift = _factors(vae)
    x = images.to(device, vae.dtype) * 2 - 1
    dist = vae.encode(x).latent_dist
    z = dist.sample(generator) if sample_posterior else dist.mode()
    return ((z.float() - shift) * scale).to(torch.float32)


def _factors(vae: nn.Module) -> tuple[float, float]:
    cfg = vae.config
    return float(cfg.scaling_factor), float(getattr(cfg, "shift_factor", None) or 0.0)
