"""Time and peak memory of one TDM-R1 micro-step (fake, surrogate and generator updates).

Runs the TDM-R1 method's own step functions (``TdmR1.fake_step`` / ``surrogate_step`` /
``generator_step``) and the loop's three optimiser steps on random weights of the real architectures with
the three LoRA roles (r=32, alpha=64 on the attention projections), gradient checkpointing on,
text encoders absent (conditioning given directly: they are offloaded after encoding).

* SD3.5-Medium at 512 px, micro-batch 12 (target: <= 40 GB so one 48 GB card trains it);
* Z-Image (6B) at 1024 px: the largest micro-batch that fits (``--find-max``).

Without a GPU (``--device cpu``) the same code runs on reduced configurations; the markdown says so.

    python benchmarks/perf/train.py --device cuda --dtype bfloat16            # real sizes
    python benchmarks/perf/train.py --device cpu --reduced                     # this machine
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402
from generation import REDUCED, conditioning, make_adapter, sync  # noqa: E402

from tdm_r1.train.config import load_train_config  # noqa: E402
from tdm_r1.train.ema import EMA  # noqa: E402
from tdm_r1.train.methods.base import Batch  # noqa: E402
from tdm_r1.train.methods.tdm_r1 import FAKE, GEN, OLD, SUR, TdmR1  # noqa: E402
from tdm_r1.train.trainer import Trainer  # noqa: E402


@dataclasses.dataclass
class Row:
    model: str
    resolution: int
    micro_batch: int
    reduced: bool
    step_s: float | None = None
    peak_gib: float | None = None
    fits: bool = True
    note: str = ""


def build_trainer(
    model: str, reduced: bool, res: int, micro: int, device: torch.device, dtype: torch.dtype
) -> tuple[Trainer, Any]:
    adapter, tokens, width = make_adapter(model, reduced, device, dtype)
    cfg = load_train_config(
        "sd3.5m-ocr-1gpu",
        overrides=[
            f"method.micro_batch={micro}",
            "rollout.prompts_per_epoch=1",
            f"rollout.group_size={max(micro, 2)}",
        ],
    )
    t = Trainer(cfg)
    targets = None if model == "sd3.5-medium" else ["to_q", "to_k", "to_v", "to_out.0"]
    for role in (GEN, FAKE, SUR, OLD):
        adapter.add_role(
            role,
            rank=32,
            alpha=64,
            target_modules=targets,
            init="gaussian" if role == GEN else "zeros",
            trainable=role != OLD,
        )
    adapter.transformer.enable_gradient_checkpointing()
    t.adapter, t.device, t.world, t.rank, t.epoch = adapter, device, 1, 0, 0
    t.steps = 4
    sched = adapter.schedule(4, height=res, width=res)
    t.schedule, t.sigmas, t.model_sigmas = sched, sched.sigmas.float(), sched.model_sigmas.float()
    t.shift = 3.0
    t.train_steps = [0, 1, 2, 3]
    t.method = TdmR1(t, null=conditioning(model, 1, tokens, width, device, dtype))
    t.opt = {r: torch.optim.AdamW(adapter.role_parameters(r), lr=3e-4) for r in (GEN, FAKE, SUR)}
    t.ema = EMA(adapter.role_parameters(GEN), 0.9)
    t.updates = {GEN: 0, FAKE: 0, SUR: 0}
    cond = conditioning(model, micro, tokens, width, device, dtype)
    return t, cond


def micro_step(t: Trainer, cond: Any, latents: torch.Tensor, adv: torch.Tensor, groups: torch.Tensor) -> None:
    n = latents.shape[0]
    batch = Batch(0, 0, slice(0, n), torch.arange(n), groups, latents, adv, cond)
    t.method.fake_step(batch, 1)
    t.method.surrogate_step(batch, 0)
    t.method.generator_step(batch, 1)
    for role in (FAKE, SUR, GEN):
        t._step(role)


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def measure(model: str, res: int, micro: int, args: argparse.Namespace) -> Row:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    row = Row(model=model, resolution=res, micro_batch=micro, reduced=args.reduced)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        t, cond = build_trainer(model, args.reduced, res, micro, device, dtype)
        c, h, w = t.adapter.latent_shape(res, res)
        g = torch.Generator().manual_seed(0)
        latents = torch.randn(micro, 5, c, h, w, generator=g)
        adv = torch.randn(micro, generator=g).clamp(-3, 3)
        groups = torch.zeros(micro, dtype=torch.long)
        micro_step(t, cond, latents, adv, groups)  # warm-up
        sync(device)
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            micro_step(t, cond, latents, adv, groups)
            sync(device)
            times.append(time.perf_counter() - start)
        row.step_s = sorted(times)[len(times) // 2]
        row.peak_gib = peak_gib(device)
    except torch.OutOfMemoryError:
        row.fits = False
        row.note = "out of memory"
    finally:
        for name in ("t", "cond", "latents"):
            locals().pop(name, None)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def write(rows: list[Row], args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# TDM-R1 micro-step: time and peak memory",
        "",
        f"Generated by `benchmarks/perf/train.py` on {dt.date.today()} ({platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, device {args.device}, dtype {args.dtype}).",
        "",
        "One micro-step = fake-score step + surrogate (DGPO) step + generator step at one boundary each, "
        "plus the three AdamW updates: 3 LoRA roles (r=32, alpha=64) on one frozen transformer, "
        "gradient checkpointing, text encoders absent (offloaded after encoding).",
        "",
    ]
    if args.reduced:
        lines += [
            "**Reduced configurations on the CPU** (no GPU time was left for this script in this session): "
            f"SD3.5-M-shaped transformer with {REDUCED['sd3.5-medium']['num_layers']} layers / "
            f"{REDUCED['sd3.5-medium']['num_attention_heads']} heads, Z-Image-shaped with dim {REDUCED['z-image']['dim']}. "
            "The numbers show the code path runs and how it scales, not real-size cost.",
            "",
        ]
    lines += [
        "| model | resolution | micro-batch | s / micro-step | peak memory (GiB) | fits |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        step = f"{r.step_s:.3f}" if r.step_s is not None else "-"
        peak = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "-"
        lines.append(
            f"| {r.model} | {r.resolution} | {r.micro_batch} | {step} | {peak} | {'yes' if r.fits else 'no: ' + r.note} |"
        )
    lines += [
        "",
        "Peak memory: `torch.cuda.max_memory_allocated` on GPUs, the process's max RSS on the CPU.",
        "",
    ]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="bfloat16 on GPUs, float32 on the CPU")
    ap.add_argument("--reduced", action="store_true", help="reduced configurations (CPU)")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--sd35-res", type=int, default=512)
    ap.add_argument("--sd35-batch", type=int, default=12)
    ap.add_argument("--zimage-res", type=int, default=1024)
    ap.add_argument("--find-max", action="store_true", help="largest Z-Image micro-batch that fits")
    ap.add_argument("--out", default=str(REPO / "results" / "perf" / "train.md"))
    args = ap.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    rows = [measure("sd3.5-medium", args.sd35_res, args.sd35_batch, args)]
    write(rows, args)
    batches = [1, 2, 4, 8, 16, 32] if args.find_max else [1]
    for b in batches:
        row = measure("z-image", args.zimage_res, b, args)
        rows.append(row)
        write(rows, args)
        if not row.fits:
            break


if __name__ == "__main__":
    main()
