"""Stage 2 of the toy build: the text-to-image flow teacher, a tiny SD3 pipeline.

Rectified flow in the VAE's latent space (x_t = (1 - s) x0 + s * noise, target v = noise - x0,
the SD3 convention), logit-normal noise levels shifted toward noise (the layout is decided at
high noise, which is the hard part of this world), 10% prompt dropout to the empty prompt for
classifier-free guidance, the two CLIP text encoders trained jointly with the transformer, an
EMA of all trained weights, and fresh renders every step (no fixed dataset to overfit).

Resumable: a checkpoint every ``ckpt_every_s`` seconds of training; rerunning continues.
The EMA weights are saved as a diffusers ``StableDiffusion3Pipeline`` folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tdm_r1.apps.toybuild.data import RenderedSet, render_dataset
from tdm_r1.flow import noised
from tdm_r1.toyworld.components import (
    ToyArch,
    clip_tokenizer,
    encode_ids_sd3,
    encode_prompts_sd3,
    text_encoder,
    tokenize,
    transformer,
)
from tdm_r1.train import checkpoint
from tdm_r1.train.ema import EMA

log = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    #: Optimiser steps; 0 = as many as fit in the time budget (measured over the first steps).
    steps: int = 20000
    batch_size: int = 64
    lr: float = 7e-4
    warmup: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    cond_dropout: float = 0.1
    t_mean: float = 0.5
    t_std: float = 1.0
    dataset_size: int = 60_000
    seed: int = 0
    ckpt_every_s: float = 300.0
    log_every: int = 50
    eval_every: int = 0
    #: bf16 autocast on CUDA (ignored on the CPU).
    bf16: bool = True


@dataclass
class ToyModules:
    """The trainable modules and the frozen VAE of the toy teacher."""

    transformer: Any
    te1: Any
    te2: Any
    tokenizer: Any
    vae: Any

    @property
    def trained(self) -> list[torch.nn.Module]:
        return [self.transformer, self.te1, self.te2]

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        joint = self.transformer.config.joint_attention_dim
        return encode_prompts_sd3(prompts, (self.tokenizer, self.tokenizer), (self.te1, self.te2), joint)

    def encode_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_ids_sd3(ids, (self.te1, self.te2), self.transformer.config.joint_attention_dim)

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """v = noise - x0 at noise level ``sigma`` (N,); SD3 takes timestep = 1000 * sigma."""
        return self.transformer(
            hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=embeds, pooled_projections=pooled
        ).sample

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,64,64) in [0,1] -> normalised latents (N,4,16,16)."""
        z = self.vae.encode(images * 2 - 1).latent_dist.mode()
        return (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, H, W) images in [0, 1] (the toy VAE's scaling and shift)."""
        z = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        return ((self.vae.decode(z).sample + 1) / 2).clamp(0, 1)


def build_modules(vae_path: str | Path, arch: ToyArch, seed: int, device: torch.device) -> ToyModules:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_path).to(device).eval().requires_grad_(False)
    return ToyModules(
        transformer=transformer(arch, seed=seed).to(device),
        te1=text_encoder(arch.te1_hidden, arch, seed=seed + 1).to(device),
        te2=text_encoder(arch.te2_hidden, arch, seed=seed + 2).to(device),
        tokenizer=clip_tokenizer(),
        vae=vae,
    )


def lr_at(step: int, cfg: TeacherConfig, total: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_teacher(
    out_dir: str | Path,
    vae_path: str | Path,
    cfg: TeacherConfig,
    *,
    arch: ToyArch | None = None,
    device: str | torch.device = "cpu",
    time_budget_s: float | None = None,
    evaluate: Callable[[ToyModules, int], dict[str, float]] | None = None,
    data: RenderedSet | None = None,
    init: Callable[[ToyModules], None] | None = None,
) -> Path | None:
    """Train (or resume) the toy teacher. Returns the pipeline folder, or None if the budget ran out.

    ``init`` may load starting weights into the freshly built modules (e.g. to continue a run
    made elsewhere with a new optimiser); a resumed checkpoint overrides it.
    """
    out_dir = Path(out_dir)
    arch = arch or ToyArch()
    device = torch.device(device)
    mods = build_modules(vae_path, arch, cfg.seed, device)
    if init is not None:
        init(mods)
    params = [p for m in mods.trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    ema = EMA(params, cfg.ema_decay, warmup=True)
    data = data if data is not None else render_dataset(cfg.dataset_size, cfg.seed + 1)
    latents = encode_dataset(mods, data, device)  # (N, C, h, w) fp16 on device
    # Toy prompts repeat: tokenize each distinct prompt once; row 0 is the empty prompt (CFG).
    distinct = [""] + sorted({m["prompt"] for m in data.metas})
    row = {p: i for i, p in enumerate(distinct)}
    ids_table = tokenize(distinct, mods.tokenizer).to(device)
    prompt_rows = torch.tensor([row[m["prompt"]] for m in data.metas], device=device)
    gen = torch.Generator().manual_seed(cfg.seed)
    total = cfg.steps
    step = 0
    ckpt_dir = out_dir / "teacher-checkpoints"
    last = checkpoint.latest(ckpt_dir)
    if last is not None:
        state = checkpoint.load(last)
        for m, sd in zip(mods.trained, state["models"], strict=True):
            m.load_state_dict(sd)
        opt.load_state_dict(state["opt"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        checkpoint.set_rng_state(state["rng"])
        step, total = state["step"], state["total"]
        log.info("resumed the teacher from %s (step %d of %d)", last, step, total)
    if total <= 0 and time_budget_s is None:
        raise ValueError("TeacherConfig.steps=0 (auto) needs a time budget")

    def save_ckpt() -> None:
        checkpoint.save(
            ckpt_dir,
            step,
            {
                "models": [m.state_dict() for m in mods.trained],
                "opt": opt.state_dict(),
                "ema": ema.state_dict(),
                "gen": gen.get_state(),
                "rng": checkpoint.rng_state(),
                "step": step,
                "total": total,
            },
        )

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.bf16 and device.type == "cuda"
        else contextlib.nullcontext()
    )
    t0 = time.perf_counter()
    last_ckpt = t0
    calib_start, calib_steps = 20, 60  # skip the first steps (allocator and kernel warm-up)
    t_calib = t0
    auto_total = total <= 0  # the budget sets the number of steps, then training runs to the end
    for m in mods.trained:
        m.train()
    while total <= 0 or step < total:
        if step == calib_start:
            t_calib = time.perf_counter()
        if total <= 0 and step == calib_steps:
            per_step = (time.perf_counter() - t_calib) / (calib_steps - calib_start)
            remaining = time_budget_s - (time.perf_counter() - t0)
            total = max(calib_steps + 1, calib_steps + int(remaining / per_step * 0.97))
            log.info("teacher: %.1f ms per step -> %d steps in the time budget", per_step * 1e3, total)
        sched_total = total if total > 0 else 10 * cfg.warmup
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg, sched_total)
        idx = torch.randint(len(prompt_rows), (cfg.batch_size,), generator=gen).to(device)
        drop = (torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout).to(device)
        ids = ids_table[torch.where(drop, torch.zeros_like(idx), prompt_rows[idx])]
        x0 = latents[idx].float()
        noise = torch.randn(x0.shape, generator=gen).to(device)
        sigma = torch.sigmoid(cfg.t_mean + cfg.t_std * torch.randn(cfg.batch_size, generator=gen)).to(device)
        x_t = noised(x0, sigma, noise)
        with autocast:
            embeds, pooled = mods.encode_ids(ids)
            v = mods.velocity(x_t, sigma, embeds, pooled)
        loss = ((v.float() - (noise - x0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        step += 1
        if step % cfg.log_every == 0:
            log.info(
                "teacher step %d/%d loss %.4f grad %.2f lr %.2e (%.0f s)",
                step, total, loss.item(), float(grad_norm), lr_at(step, cfg, sched_total), time.perf_counter() - t0,
            )  # fmt: skip
        if evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0:
            with ema.swapped():
                for m in mods.trained:
                    m.eval()
                metrics = evaluate(mods, step)
                for m in mods.trained:
                    m.train()
            log.info("teacher eval step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})
        now = time.perf_counter()
        over = time_budget_s is not None and not auto_total and now - t0 > time_budget_s
        if now - last_ckpt > cfg.ckpt_every_s or step == total or over:
            save_ckpt()
            last_ckpt = now
        if over and step < total:
            log.info("teacher: time budget reached at step %d; rerun to resume", step)
            return None
    ema.copy_to()
    return save_pipeline(out_dir / "toy-teacher", mods)


@torch.no_grad()
def encode_dataset(
    mods: ToyModules, data: RenderedSet, device: torch.device, batch: int = 512
) -> torch.Tensor:
    """Encode every render once with the frozen VAE -> (N, C, h, w) normalised latents (fp16)."""
    out = []
    for i in range(0, len(data), batch):
        x = torch.from_numpy(data.images[i : i + batch]).to(device).permute(0, 3, 1, 2).float() / 255.0
        out.append(mods.encode_images(x).half())
    return torch.cat(out)


def save_pipeline(path: Path, mods: ToyModules, *, shift: float = 1.0) -> Path:
    """Save the modules as a diffusers ``StableDiffusion3Pipeline`` folder (no T5)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(
        transformer=mods.transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        vae=mods.vae,
        text_encoder=mods.te1.eval(),
        tokenizer=mods.tokenizer,
        text_encoder_2=mods.te2.eval(),
        tokenizer_2=mods.tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.save_pretrained(path)
    return path
