"""The planner's predictions next to measurements on one GPU (random weights, no downloads).

Rows: ``forward`` SD3.5-M 512 px b16 and 1024 px b4, Z-Image 1024 px b4; ``lora-step`` SD3.5-M
512 px b6 and b12, with and without gradient checkpointing; the ``sd3.5m-ocr-1gpu`` recipe's
micro-step (predicted by composition; measured: the same composition's passes run for real, so
each pass's peak is compared; the whole method step is measured by ``benchmarks/perf/train.py``).
Each measured row runs the very step the planner traces (:mod:`tdm_r1.planning.steps`) on
``cuda`` with real kernels (flash / memory-efficient SDPA, real autocast): peak
``torch.cuda.max_memory_allocated`` (vs the predicted allocated peak), reserved + context from
``torch.cuda.mem_get_info`` (vs the predicted on-card peak), and the median time of 3 steps after
a warm-up (vs the predicted time). Budget: under 8 minutes on one H100.

    python benchmarks/perf/gpu_check.py                 # on the GPU: writes results/perf/gpu_check.md
    python benchmarks/perf/gpu_check.py --dry-run       # anywhere: the predicted rows only (meta device)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tdm_r1.planning import plan as P  # noqa: E402
from tdm_r1.planning.gpus import GPUS  # noqa: E402
from tdm_r1.planning.steps import BODIES, Setup, role_pass_body  # noqa: E402
from tdm_r1.planning.workloads import MODELS  # noqa: E402

GIB = 2**30


@dataclass(frozen=True)
class Row:
    label: str
    workload: str
    model: str
    resolution: int
    batch: int
    grad_checkpointing: bool = False


ROWS = [
    Row("forward SD3.5-M 512px b16", "forward", "sd3.5-medium", 512, 16),
    Row("forward SD3.5-M 1024px b4", "forward", "sd3.5-medium", 1024, 4),
    Row("forward Z-Image 1024px b4", "forward", "z-image", 1024, 4),
    Row("lora-step SD3.5-M 512px b6", "lora-step", "sd3.5-medium", 512, 6),
    Row("lora-step SD3.5-M 512px b6 ckpt", "lora-step", "sd3.5-medium", 512, 6, True),
    Row("lora-step SD3.5-M 512px b12", "lora-step", "sd3.5-medium", 512, 12),
    Row("lora-step SD3.5-M 512px b12 ckpt", "lora-step", "sd3.5-medium", 512, 12, True),
]
RECIPE = "sd3.5m-ocr-1gpu"


def predicted(row: Row) -> P.Estimate:
    shape, knobs = MODELS[row.model], P.Knobs(row.batch, row.grad_checkpointing)
    if row.workload == "forward":
        return P.estimate_forward(shape, row.resolution, knobs)
    return P.estimate_lora_step(shape, row.resolution, 32, knobs)


class _CudaProbe:
    """``restart``: reset the peak statistics so the reported step is the second one."""

    def phase(self, name: str) -> Any:
        from contextlib import nullcontext

        return nullcontext()

    def restart(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def measure(body: Any, setup: Setup, repeats: int = 3, **kw: Any) -> dict[str, float]:
    """Peak allocated / on-card GiB and median seconds of ``body`` run for real on cuda."""
    torch.manual_seed(0)
    torch.cuda.empty_cache()
    free0, total = torch.cuda.mem_get_info()
    tensors, run, _ = body(setup, torch.device("cuda"), **kw)
    del tensors
    run(_CudaProbe())  # warm-up (cuBLAS / kernel selection) and the measured peak
    allocated = torch.cuda.max_memory_allocated() / GIB
    reserved = torch.cuda.max_memory_reserved() / GIB
    free1, _ = torch.cuda.mem_get_info()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(_CudaProbe())
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # a lora-step run does two steps (the second is the reported one): time per step = half
    per = statistics.median(times) / (2 if body is BODIES["lora-step"] or kw.get("grad") else 1)
    on_card = (total - free1) / GIB
    del run
    torch.cuda.empty_cache()
    return {
        "allocated": allocated,
        "reserved": reserved,
        "on_card": on_card,
        "seconds": per,
        "free0": free0 / GIB,
    }


def _fmt(pred: float, meas: float | None) -> str:
    if meas is None:
        return f"{pred:.2f} | -"
    return f"{pred:.2f} | {meas:.2f} ({100 * (pred - meas) / meas:+.0f}%)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the predicted rows only (no GPU needed)")
    ap.add_argument("--gpu", default="h100", help="the spec row predictions use (h100 | h200 | ...)")
    ap.add_argument("--rows", default="", help="comma-separated substrings of row labels (default: all)")
    ap.add_argument("--no-recipe", action="store_true", help="skip the recipe row")
    ap.add_argument("--out", default=str(REPO / "results" / "perf" / "gpu_check.md"))
    args = ap.parse_args(argv)
    card = GPUS[args.gpu]
    real = not args.dry_run
    if real and not torch.cuda.is_available():
        print("no CUDA device: this check needs one (use --dry-run for the predictions)", file=sys.stderr)
        return 2
    rows = [r for r in ROWS if not args.rows or any(s in r.label for s in args.rows.split(","))]
    lines = [
        f"# Planner vs measurement ({torch.cuda.get_device_name() if real else 'dry run, ' + card.label})",
        "",
        "Predicted on the meta device by `tdm_r1.planning`; measured: the same step with random weights. "
        "GiB allocated = `torch.cuda.max_memory_allocated`; on card = total - free after the step.",
        "",
        "| row | alloc GiB pred | meas | on-card GiB pred | meas | s/step pred | meas | TFLOP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t0 = time.time()
        est = predicted(row)
        m = None
        if real:
            body = BODIES[row.workload]
            m = measure(body, Setup(MODELS[row.model], row.batch, row.resolution, 32, row.grad_checkpointing))
        secs = sum(est.seconds(card))
        line = (
            f"| {row.label} | {_fmt(est.allocated_gib, m and m['allocated'])} | "
            f"{_fmt(est.peak_memory_gib, m and m['on_card'])} | {_fmt(secs, m and m['seconds'])} | "
            f"{est.flops / 1e12:.1f} |"
        )
        lines.append(line)
        print(line, f"({time.time() - t0:.0f}s)", flush=True)
    if not args.no_recipe:
        from tdm_r1.planning.recipe import load_micro_step

        ms = load_micro_step(RECIPE)
        est = P.estimate_recipe(ms, P.Knobs(ms.micro_batch, ms.grad_checkpointing, ms.offload_text_encoders))
        lines.append(
            f"| {RECIPE} micro-step (composed) | {est.allocated_gib:.2f} | - | {est.peak_memory_gib:.2f} | - | "
            f"{sum(est.seconds(card)):.2f} | - | {est.flops / 1e12:.1f} |"
        )
        if real:  # the composition's unit: one generator forward + backward at the micro-batch
            setup = Setup(ms.shape, ms.micro_batch, ms.resolution, ms.rank, ms.grad_checkpointing)
            unit = measure(role_pass_body, setup, grad=True)
            lines.append(
                f"| {RECIPE} unit: grad pass b{ms.micro_batch} (measured) | - | {unit['allocated']:.2f} | - | "
                f"{unit['on_card']:.2f} | - | {unit['seconds']:.3f} | - |"
            )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if real:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
