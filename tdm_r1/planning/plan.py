"""From traces to a plan: predicted peak GPU memory, time per step, whether it fits, what makes it fit.

Memory on the card = the tracked peak (allocator blocks, 512-byte rounded) x ``FRAGMENTATION``
(reserved / allocated) + ``CUDA_CONTEXT_GIB``. Time = FLOPs / (peak x achieved compute fraction)
+ bytes moved / (bandwidth x achieved fraction), bytes moved being every weight read once per pass
plus every byte the step allocates written and read once. The two add because eager PyTorch runs
its kernels one after another: the GEMMs and attention are compute-bound, the casts, norms,
modulations and LoRA adds between them are bandwidth-bound (matmul outputs are counted in both,
a small over-count). Values and sources: :mod:`tdm_r1.planning.gpus`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tdm_r1.planning.gpus import (
    ACHIEVED_BANDWIDTH,
    ACHIEVED_COMPUTE,
    CUDA_CONTEXT_GIB,
    FRAGMENTATION,
    GPUS,
    GpuSpec,
)
from tdm_r1.planning.recipe import MicroStep
from tdm_r1.planning.steps import Setup, StepResult, forward_body, lora_step_body, predict, role_pass_body
from tdm_r1.planning.workloads import ModelShape

GIB = 2**30


@dataclass(frozen=True)
class Knobs:
    """The switches the planner may flip to make a step fit."""

    batch: int
    grad_checkpointing: bool = False
    offload_text_encoders: bool = True
    adam8bit: bool = False


@dataclass
class Estimate:
    """A workload at one setting of the knobs, independent of the card."""

    workload: str
    knobs: Knobs
    memory: dict[str, float]  # GiB per part (params, lora, grads, optimizer, ema, activations, ...)
    allocated_gib: float  # predicted torch.cuda.max_memory_allocated
    flops: int
    passes: float  # weight reads per step (forward 1, training 2, +1 with checkpointing)
    weight_bytes: int
    traffic_bytes: int
    kind: str  # "train" | "forward"
    params: dict[str, int] = field(default_factory=dict)

    @property
    def peak_memory_gib(self) -> float:
        """Predicted peak GPU memory: the traced allocation peak x the allocator's fragmentation
        allowance, plus the CUDA context."""
        return self.allocated_gib * FRAGMENTATION + CUDA_CONTEXT_GIB

    def seconds(self, gpu: GpuSpec) -> tuple[float, float]:
        """(compute-bound, memory-bound) seconds per step on ``gpu``."""
        compute = self.flops / (gpu.bf16_tflops * 1e12 * ACHIEVED_COMPUTE[self.kind])
        moved = self.weight_bytes * self.passes + 2 * self.traffic_bytes
        return compute, moved / (gpu.bandwidth_tbs * 1e12 * ACHIEVED_BANDWIDTH)

    def fits(self, gpu: GpuSpec) -> bool:
        """Whether the predicted peak fits in ``gpu``'s memory."""
        return self.peak_memory_gib <= gpu.memory_gib


# ------------------------------------------------------------------------------------ estimators
@cache
def _traced(body: str, setup: Setup, autocast: bool, grad: bool | None = None) -> StepResult:
    fn = {"lora-step": lora_step_body, "forward": forward_body, "pass": role_pass_body}[body]
    kw = {} if grad is None else {"grad": grad}
    return predict(fn, setup, autocast=autocast, **kw)


def _adam_bytes(trainable: int, adam8bit: bool) -> int:
    return trainable * (2 if adam8bit else 8)  # two moments: fp32, or 8-bit (bitsandbytes AdamW8bit)


def estimate_lora_step(
    shape: ModelShape, resolution: int, rank: int, knobs: Knobs, text_tokens: int | None = None
) -> Estimate:
    setup = Setup(shape, knobs.batch, resolution, rank, knobs.grad_checkpointing, text_tokens)
    r = _traced("lora-step", setup, True)
    trainable, frozen = r.params["trainable"], r.params["frozen"]
    adam = _adam_bytes(trainable, False)
    saved = adam - _adam_bytes(trainable, knobs.adam8bit)
    allocated = r.peak_bytes - saved
    base, lora = 2 * frozen, 4 * trainable
    memory = {
        "base weights (bf16, frozen)": base / GIB,
        "LoRA (fp32, trainable)": lora / GIB,
        "optimizer state": (adam - saved) / GIB,
        "activations + grads + temporaries": (allocated - base - lora - (adam - saved)) / GIB,
    }
    return Estimate("lora-step", knobs, memory, allocated / GIB, r.flops, 3 if knobs.grad_checkpointing else 2,
                    r.static_bytes, r.allocated_bytes, "train", r.params)  # fmt: skip


def estimate_forward(
    shape: ModelShape, resolution: int, knobs: Knobs, nfe: int = 1, text_tokens: int | None = None
) -> Estimate:
    r = _traced("forward", Setup(shape, knobs.batch, resolution, text_tokens=text_tokens), False)
    memory = {"weights (bf16)": r.static_bytes / GIB, "activations": (r.peak_bytes - r.static_bytes) / GIB}
    return Estimate("forward", knobs, memory, r.peak_bytes / GIB, r.flops * nfe, nfe, r.static_bytes,
                    r.allocated_bytes * nfe, "forward", r.params)  # fmt: skip


def estimate_recipe(ms: MicroStep, knobs: Knobs) -> Estimate:
    """Compose the micro-step (:mod:`tdm_r1.planning.recipe`) from traced single passes."""
    scale = knobs.batch / ms.micro_batch

    def rows(b: int) -> int:
        return max(1, round(b * scale))

    def grad_pass(b: int) -> StepResult:
        return _traced(
            "pass", Setup(ms.shape, rows(b), ms.resolution, ms.rank, knobs.grad_checkpointing), False, True
        )

    def query(b: int) -> StepResult:
        return _traced("pass", Setup(ms.shape, rows(b), ms.resolution, ms.rank), False, False)

    some = query(ms.micro_batch)
    lora_params = grad_pass(ms.micro_batch).params["trainable"]
    base = some.static_bytes - 4 * lora_params  # the query trace holds one fp32 role
    n_train, n_frozen = len(ms.trainable_roles), len(ms.frozen_roles)
    trainable = n_train * lora_params
    shape = ms.shape
    memory = {
        "base transformer (bf16, frozen)": base / GIB,
        f"LoRA roles ({n_train} trainable + {n_frozen} frozen, fp32)": 4
        * lora_params
        * (n_train + n_frozen)
        / GIB,
        "gradients (fp32)": 4 * trainable / GIB,
        "optimizer state": _adam_bytes(trainable, knobs.adam8bit) / GIB,
        "generator EMA (fp32)": 4 * lora_params / GIB,
        "VAE (bf16)": 2 * shape.vae_params / GIB,
    }
    if not knobs.offload_text_encoders:
        memory["text encoders (bf16)"] = 2 * shape.text_encoder_params / GIB
    grad_bytes = 4 * lora_params
    dynamic, flops, traffic, passes = 0, 0, 0, 0.0
    for st in ms.steps:
        g = grad_pass(st.grad)
        fwd, held, bwd = (g.phases[k] - g.static_bytes - grad_bytes for k in ("forward", "held", "backward"))
        peaks = [fwd, bwd, *(query(b).peak_bytes - query(b).static_bytes for b in st.before)]
        if st.during:
            peaks.append(held + max(query(b).peak_bytes - query(b).static_bytes for b in st.during))
        dynamic = max(dynamic, *peaks)
        flops += st.count * (g.flops + sum(query(b).flops for b in (*st.before, *st.during)))
        traffic += st.count * (
            g.allocated_bytes + sum(query(b).allocated_bytes for b in (*st.before, *st.during))
        )
        passes += st.count * ((3 if knobs.grad_checkpointing else 2) + len(st.before) + len(st.during))
    memory["activations + temporaries (peak pass)"] = dynamic / GIB
    total = sum(memory.values())
    params = {"frozen": base // 2, "trainable": trainable, "frozen_lora": n_frozen * lora_params}
    return Estimate("recipe", knobs, memory, total, flops, passes, base, traffic, "train", params)


# -------------------------------------------------------------------------------- fits / switches
def suggest(
    estimate: Callable[[Knobs], Estimate], knobs: Knobs, gpu: GpuSpec, *, training: bool = True
) -> tuple[str, Estimate] | None:
    """The first switch (cheapest in speed first) that makes the step fit on ``gpu``, or None.

    Order: 8-bit Adam and offloading the text encoders (no recomputation), gradient checkpointing
    (~1/3 more FLOPs), then a smaller micro-batch (more steps), alone and with checkpointing.
    """
    if not training:
        options = [(f"--batch {b}", dataclasses.replace(knobs, batch=b)) for b in _smaller(knobs.batch)]
    else:
        options = []
        if not knobs.adam8bit:
            options.append(("8-bit Adam (bitsandbytes AdamW8bit)", dataclasses.replace(knobs, adam8bit=True)))
        if not knobs.offload_text_encoders:
            options.append(
                ("model.offload_text_encoders=true", dataclasses.replace(knobs, offload_text_encoders=True))
            )
        ck = dataclasses.replace(knobs, grad_checkpointing=True)
        if not knobs.grad_checkpointing:
            options.append(("gradient checkpointing (--grad-checkpointing)", ck))
        for b in _smaller(knobs.batch):
            options.append((f"micro-batch {b}", dataclasses.replace(knobs, batch=b)))
            if not knobs.grad_checkpointing:
                options.append(
                    (f"gradient checkpointing + micro-batch {b}", dataclasses.replace(ck, batch=b))
                )
    for label, k in options:
        e = estimate(k)
        if e.fits(gpu):
            return label, e
    return None


def _smaller(batch: int) -> list[int]:
    out, b = [], batch
    while b > 1:
        b //= 2
        out.append(b)
    return out


# ------------------------------------------------------------------------------------- the report
def report(
    est: Estimate, gpu: GpuSpec, title: str, suggestion: tuple[str, Estimate] | None
) -> dict[str, Any]:
    compute, memory = est.seconds(gpu)
    out: dict[str, Any] = {
        "title": title,
        "workload": est.workload,
        "gpu": gpu.label,
        "knobs": dataclasses.asdict(est.knobs),
        "parameters": est.params,
        "memory_gib": {k: round(v, 3) for k, v in est.memory.items()},
        "allocated_peak_gib": round(est.allocated_gib, 3),
        "peak_memory_gib": round(est.peak_memory_gib, 3),
        "gpu_memory_gib": round(gpu.memory_gib, 2),
        "step_flops": int(est.flops),
        "step_seconds": round(compute + memory, 4),
        "compute_seconds": round(compute, 4),
        "bandwidth_seconds": round(memory, 4),
        "bound": "compute" if compute >= memory else "memory bandwidth",
        "fits": est.fits(gpu),
        "fits_on": [g.name for g in GPUS.values() if est.fits(g)],
        "assumptions": {
            "achieved_compute_fraction": ACHIEVED_COMPUTE[est.kind],
            "achieved_bandwidth_fraction": ACHIEVED_BANDWIDTH,
            "allocator_fragmentation": FRAGMENTATION,
            "cuda_context_gib": CUDA_CONTEXT_GIB,
        },
    }
    if suggestion is not None:
        label, e = suggestion
        out["suggestion"] = {"switch": label, "peak_memory_gib": round(e.peak_memory_gib, 3),
                             "step_seconds": round(sum(e.seconds(gpu)), 4)}  # fmt: skip
    elif not out["fits"]:
        out["suggestion"] = None
    return out


def render(r: dict[str, Any]) -> str:
    lines = [f"{r['title']} on {r['gpu']}", ""]
    lines += [f"  parameters: {', '.join(f'{k} {v / 1e6:,.1f} M' for k, v in r['parameters'].items())}"]
    lines += ["  memory (GiB):"] + [f"    {k:<52} {v:8.2f}" for k, v in r["memory_gib"].items()]
    lines += [
        f"    {'allocated peak (torch max_memory_allocated)':<52} {r['allocated_peak_gib']:8.2f}",
        f"    {'on the card (x fragmentation + CUDA context)':<52} {r['peak_memory_gib']:8.2f}"
        f"  of {r['gpu_memory_gib']:.1f}",
        f"  FLOPs per step: {r['step_flops'] / 1e12:,.1f} TFLOP",
        f"  time per step: {r['step_seconds']:.3f} s = {r['compute_seconds']:.3f} s compute "
        f"({r['assumptions']['achieved_compute_fraction']:.0%} of peak bf16 assumed) + "
        f"{r['bandwidth_seconds']:.3f} s memory traffic (mostly {r['bound']}; see docs/planning.md)",
        f"  fits: {'yes' if r['fits'] else 'NO'} (fits on: {', '.join(r['fits_on']) or 'none of the table'})",
    ]
    if "suggestion" in r:
        s = r["suggestion"]
        lines.append(
            f"  to fit: {s['switch']} -> {s['peak_memory_gib']:.2f} GiB, {s['step_seconds']:.3f} s/step"
            if s
            else "  to fit: no single switch of the planner's list is enough"
        )
    return "\n".join(lines)
