"""Stage 1 of the toy build: the autoencoder (64x64x3 <-> 16x16x4), trained on fresh renders.

Resumable: a checkpoint every ``ckpt_every`` steps; rerunning the same command continues.
At the end the latent statistics set the VAE's ``shift_factor`` / ``scaling_factor`` (SD3's
convention: ``z = (mean - shift) * scale`` has unit variance) and the VAE is saved with
``save_pretrained``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tdm_r1.apps.toybuild.data import RenderedSet, render_dataset
from tdm_r1.toyworld.components import ToyArch, autoencoder
from tdm_r1.train import checkpoint

log = logging.getLogger(__name__)


@dataclass
class AEConfig:
    steps: int = 3000
    batch_size: int = 32
    dataset_size: int = 50_000
    lr: float = 1e-3
    warmup: int = 100
    kl_weight: float = 1e-6
    mse_weight: float = 1.0
    seed: int = 0
    ckpt_every: int = 200
    log_every: int = 50


def lr_at(step: int, cfg: AEConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_autoencoder(
    out_dir: str | Path,
    cfg: AEConfig,
    *,
    arch: ToyArch | None = None,
    device: str | torch.device = "cpu",
    time_budget_s: float | None = None,
    data: RenderedSet | None = None,
) -> Path | None:
    """Train (or resume) the toy VAE. Returns the saved VAE folder, or None if the budget ran out."""
    out_dir = Path(out_dir)
    arch = arch or ToyArch()
    device = torch.device(device)
    vae = autoencoder(arch, seed=cfg.seed).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    data = data if data is not None else render_dataset(cfg.dataset_size, cfg.seed)
    images_u8 = torch.from_numpy(data.images)  # (N, 64, 64, 3) uint8
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    ckpt_dir = out_dir / "ae-checkpoints"
    last = checkpoint.latest(ckpt_dir)
    if last is not None:
        state = checkpoint.load(last)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        checkpoint.set_rng_state(state["rng"])
        step = state["step"]
        log.info("resumed the autoencoder from %s (step %d)", last, step)
    else:
        torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    vae.train()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = torch.randint(len(images_u8), (cfg.batch_size,), generator=gen)
        x = images_u8[idx].to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample()).sample
        loss = (recon - x).abs().mean() + cfg.mse_weight * ((recon - x) ** 2).mean()
        loss = loss + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % cfg.log_every == 0:
            log.info(
                "ae step %d/%d loss %.4f (%.1f s)", step, cfg.steps, loss.item(), time.perf_counter() - t0
            )
        over = time_budget_s is not None and time.perf_counter() - t0 > time_budget_s
        if step % cfg.ckpt_every == 0 or step == cfg.steps or over:
            checkpoint.save(
                ckpt_dir,
                step,
                {
                    "model": vae.state_dict(),
                    "opt": opt.state_dict(),
                    "gen": gen.get_state(),
                    "rng": checkpoint.rng_state(),
                    "step": step,
                },
            )
        if over and step < cfg.steps:
            log.info("autoencoder: time budget reached at step %d; rerun to resume", step)
            return None
    vae.eval()
    set_latent_scaling(vae, images_u8[:512], device=device)
    path = out_dir / "vae"
    vae.save_pretrained(path)
    return path


@torch.no_grad()
def set_latent_scaling(vae: torch.nn.Module, images_u8: torch.Tensor, *, device: torch.device) -> None:
    """Set ``shift_factor``/``scaling_factor`` so that encoded renders have zero mean, unit std."""
    x = images_u8.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = vae.encode(x).latent_dist.mode()
    shift = float(z.mean())
    scale = float(1.0 / z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    log.info("latent shift %.4f scale %.4f", shift, scale)
