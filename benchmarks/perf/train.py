"""Time and peak memory of one training micro-step per method (TDM-R1 and the direct RL methods).

TDM-R1 (``--methods tdm-r1``, the default): runs the TDM-R1 method's own step functions
(``TdmR1.fake_step`` / ``surrogate_step`` / ``generator_step``) and the loop's three optimiser steps
on random weights of the real architectures with the three LoRA roles (r=32, alpha=64 on the
attention projections), gradient checkpointing on, text encoders absent (conditioning given
directly: they are offloaded after encoding).

* SD3.5-Medium at 512 px, micro-batch 12 (target: <= 40 GB so one 48 GB card trains it);
* Z-Image (6B) at 1024 px: the largest micro-batch that fits (``--find-max``).

Flow-GRPO, DiffusionNFT and DGPO (``--methods flow-grpo,diffusionnft,dgpo``): each method's own
``train_micro`` plus its optimiser step on SD3.5-Medium at 512 px with its public per-GPU
micro-batch (9, 9, 16), see ``train_methods.py``.

Without a GPU (``--device cpu``) the same code runs on reduced configurations; the markdown says so.

    python benchmarks/perf/train.py --device cuda --dtype bfloat16            # TDM-R1, real sizes
    python benchmarks/perf/train.py --device cpu --reduced                     # this machine
    # all four methods on one GPU (a few minutes on an H100/H200), into results/perf/train.md:
    python benchmarks/perf/train.py --device cuda --dtype bfloat16 --methods tdm-r1,flow-grpo,diffusionnft,dgpo
    # the CPU check of all four, one process per method (results/perf/train_methods_cpu.md):
    for m in tdm-r1 flow-grpo diffusionnft dgpo; do OMP_NUM_THREADS=1 python benchmarks/perf/train.py \
        --device cpu --reduced --methods $m --sd35-res 128 --sd35-batch 2 --zimage-res 128 \
        --micro flow-grpo=2,diffusionnft=2,dgpo=2 --append --out results/perf/train_methods_cpu.md; done
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402
import train_methods  # noqa: E402
from generation import REDUCED, conditioning, make_adapter, sync, text_tokens_note  # noqa: E402

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
    method: str = "tdm-r1"
    #: the warm-up micro-step's method metrics (e.g. Flow-GRPO's on-policy ratio_mean = 1)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


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


def timed_steps(step: Any, iters: int, device: torch.device) -> float:
    """Median seconds of ``step()`` over ``iters`` runs (after the caller's warm-up)."""
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_method(method: str, res: int, micro: int, args: argparse.Namespace) -> Row:
    """One Flow-GRPO / DiffusionNFT / DGPO micro-step on SD3.5-M (see ``train_methods.py``)."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    row = Row(
        model=train_methods.MODEL, resolution=res, micro_batch=micro, reduced=args.reduced, method=method
    )
    try:
        t, cond = train_methods.build(method, args.reduced, res, micro, device, dtype)
        batch = train_methods.first_batch(t, cond, res, micro)
        sync(device)
        if device.type == "cuda":  # the rollout above is not part of the micro-step
            torch.cuda.reset_peak_memory_stats(device)
        row.metrics = train_methods.micro_step(t, batch)  # warm-up
        sync(device)
        row.step_s = timed_steps(lambda: train_methods.micro_step(t, batch), args.iters, device)
        row.peak_gib = peak_gib(device)
    except torch.OutOfMemoryError:
        row.fits = False
        row.note = "out of memory"
    except Exception as exc:  # noqa: BLE001 (recorded in the row: one failure must not cost the others their run)
        traceback.print_exc()
        row.note = f"error: {type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")[:200]
    return row


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
    methods = list(dict.fromkeys(r.method for r in rows))
    title = "TDM-R1 micro-step" if methods == ["tdm-r1"] else "Training micro-step per method"
    lines = [
        f"# {title}: time and peak memory",
        "",
        f"Generated by `benchmarks/perf/train.py` on {dt.date.today()} ({platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, device {args.device}, dtype {args.dtype}).",
        "",
        "Random weights of the real architectures, gradient checkpointing, text encoders absent "
        f"(offloaded after encoding); text tokens per prompt: {text_tokens_note()}. One micro-step:",
        "",
    ]
    if "tdm-r1" in methods:
        lines.append(
            "- tdm-r1: fake-score step + surrogate (DGPO) step + generator step at one boundary each, "
            "plus the three AdamW updates: 3 LoRA roles (r=32, alpha=64) on one frozen transformer "
            "(the 4-step student)."
        )
    for m in methods:
        if m in train_methods.RECIPES:
            r = train_methods.RECIPES[m]
            lines.append(
                f"- {m}: the method's `train_micro` ({r.what}) + the generator's AdamW update, "
                f"LoRA r={r.lora_rank}, alpha={r.lora_alpha:g}, on the base model (40-step Euler, CFG 4.5)."
            )
    lines.append("")
    if args.reduced:
        lines += [
            "**Reduced configurations on the CPU** (no GPU time was left for this script in this session): "
            f"SD3.5-M-shaped transformer with {REDUCED['sd3.5-medium']['num_layers']} layers / "
            f"{REDUCED['sd3.5-medium']['num_attention_heads']} heads, Z-Image-shaped with dim {REDUCED['z-image']['dim']}, "
            "at reduced resolutions and micro-batches. "
            "The numbers show the code path runs and how it scales, not real-size cost.",
            "",
        ]
    lines += [
        "| method | model | resolution | micro-batch | s / micro-step | peak memory (GiB) | fits |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        step = f"{r.step_s:.3f}" if r.step_s is not None else "-"
        peak = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "-"
        fits = ("yes" if not r.note else r.note) if r.fits else "no: " + r.note
        lines.append(
            f"| {r.method} | {r.model} | {r.resolution} | {r.micro_batch} | {step} | {peak} | {fits} |"
        )
    checks = [r for r in rows if r.metrics]
    if checks:
        lines += [
            "",
            "The warm-up micro-step's own metrics (on-policy start: Flow-GRPO's ratio is 1, DGPO's group weight 0.5):",
            "",
        ]
        for r in checks:
            vals = ", ".join(f"{k} {v:.4g}" for k, v in r.metrics.items())
            lines.append(f"- {r.method} ({r.model}, {r.resolution} px, micro-batch {r.micro_batch}): {vals}")
    lines += [
        "",
        "Peak memory: `torch.cuda.max_memory_allocated` on GPUs (weights included; for flow-grpo the "
        "untimed rollout that produced its stored transitions is excluded), the process's max RSS on the "
        "CPU (cumulative over the rows of one run: read only the first row or the growth).",
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
    ap.add_argument(
        "--methods",
        default="tdm-r1",
        help=f"comma-separated: tdm-r1 (SD3.5-M and Z-Image rows), {', '.join(train_methods.RECIPES)}",
    )
    ap.add_argument(
        "--append",
        action="store_true",
        help="keep the rows of --out's JSON twin (a row measured again replaces its old one)",
    )
    ap.add_argument(
        "--micro",
        default="",
        help="micro-batch per RL method, e.g. flow-grpo=2,dgpo=4 (default: the public per-GPU batch)",
    )
    ap.add_argument("--out", default=str(REPO / "results" / "perf" / "train.md"))
    args = ap.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = ["tdm-r1", *train_methods.RECIPES]
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        raise SystemExit(f"--methods: unknown {bad or 'empty list'}; choose from {', '.join(known)}")
    micro = {m: r.micro_batch for m, r in train_methods.RECIPES.items()}
    for item in filter(None, args.micro.split(",")):
        name, _, n = item.partition("=")
        if name not in micro or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--micro {item!r}: expected METHOD=N with METHOD in {', '.join(micro)}, N >= 1")
        micro[name] = int(n)
    device = torch.device(args.device)
    rows: list[Row] = []
    twin = Path(args.out).with_suffix(".json")
    if args.append and twin.is_file():
        rows = [Row(**r) for r in json.loads(twin.read_text())]
        dropped = [r for r in rows if r.reduced != args.reduced]
        if dropped:  # reduced CPU rows and real-size rows do not share a table
            print(
                f"--append: dropping {len(dropped)} row(s) of the other configuration size", file=sys.stderr
            )
            rows = [r for r in rows if r.reduced == args.reduced]

    def add(row: Row) -> None:
        key = (row.method, row.model, row.resolution, row.micro_batch)
        rows[:] = [r for r in rows if (r.method, r.model, r.resolution, r.micro_batch) != key] + [row]
        write(rows, args)
        release(device)

    for method in methods:
        release(device)
        if method != "tdm-r1":
            add(measure_method(method, args.sd35_res, micro[method], args))
            continue
        add(measure("sd3.5-medium", args.sd35_res, args.sd35_batch, args))
        batches = [1, 2, 4, 8, 16, 32] if args.find_max else [1]
        for b in batches:
            row = measure("z-image", args.zimage_res, b, args)
            add(row)
            if not row.fits:
                break


if __name__ == "__main__":
    main()
