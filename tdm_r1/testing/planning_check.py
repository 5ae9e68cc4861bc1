"""The planner's CPU validation: predicted (meta-device trace) vs measured (real CPU tensors) peak memory.

The measurement is independent of the tracker: the PyTorch profiler's allocator events
(``profile_memory=True``: every c10 CPU allocation and free with its size) are summed in time
order, and the peak of the running total is taken from the reported step on. Both sides run the
same step (:mod:`tdm_r1.planning.steps`); the measured run uses the CPU's own attention kernel
(flash attention for CPU, which saves O(tokens) like the GPU kernels) and the same emulated CUDA
autocast policy, so what is compared is the accounting and the meta-device model of the kernels.
Reduced SD3 configs keep a CPU run to seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from tdm_r1.planning.steps import BODIES, Setup, predict, role_pass_body
from tdm_r1.planning.trace import GpuSemantics
from tdm_r1.planning.workloads import MODELS, ModelShape, static_bytes

#: Reduced SD3 transformers (the real block structure: joint blocks, dual attention, qk RMSNorm).
SMALL_SD3 = dict(
    num_layers=2,
    dual_attention_layers=(0,),
    num_attention_heads=4,
    attention_head_dim=32,
    caption_projection_dim=128,
    joint_attention_dim=256,
    pooled_projection_dim=64,
    pos_embed_max_size=32,
)
MEDIUM_SD3 = dict(
    SMALL_SD3, num_layers=4, dual_attention_layers=(0, 1), num_attention_heads=6, caption_projection_dim=192
)


def reduced_sd3(overrides: dict[str, Any], text_tokens: int = 40) -> ModelShape:
    base = MODELS["sd3.5-medium"].with_config(**overrides)
    return ModelShape(
        **{
            **base.__dict__,
            "text_width": overrides["joint_attention_dim"],
            "pooled": overrides["pooled_projection_dim"],
            "text_tokens": text_tokens,
        }
    )


class _Marks:
    """Probe for a profiled run: ``restart`` leaves a named marker in the trace."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with record_function(f"phase:{name}"):
            yield

    def restart(self) -> None:
        with record_function("planning:restart"):
            pass


def measure_cpu(body: Callable[..., Any], setup: Setup, *, autocast: bool, **kw: Any) -> int:
    """Peak bytes (parameters + the step's peak) of ``body`` run for real on the CPU."""
    torch.manual_seed(0)
    tensors, run, _ = body(setup, torch.device("cpu"), **kw)
    static = static_bytes(tensors, rounding=1)
    del tensors
    semantics = GpuSemantics(torch.bfloat16 if autocast else None, sdpa="native")
    with semantics, profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run(_Marks())
    events = prof.profiler.kineto_results.events()
    marks = [e.start_ns() for e in events if e.name() == "planning:restart"]
    start = marks[0] if marks else 0
    current = peak = 0
    for t, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"):
        current += nbytes
        if t >= start:
            peak = max(peak, current)
    return static + peak


@dataclass(frozen=True)
class Case:
    label: str
    workload: str  # "lora-step" | "forward" | "grad-pass" | "nograd-pass"
    setup: Setup


def cases() -> list[Case]:
    small, medium = reduced_sd3(SMALL_SD3), reduced_sd3(MEDIUM_SD3)
    return [
        Case("lora-step small b2 128px r8", "lora-step", Setup(small, 2, 128, 8)),
        Case(
            "lora-step small b2 128px r8 ckpt", "lora-step", Setup(small, 2, 128, 8, grad_checkpointing=True)
        ),
        Case("lora-step medium b4 256px r16", "lora-step", Setup(medium, 4, 256, 16)),
        Case("forward medium b4 256px", "forward", Setup(medium, 4, 256)),
        Case("grad pass (recipe unit) small b2 128px", "grad-pass", Setup(small, 2, 128, 8)),
    ]


def run_case(case: Case) -> tuple[int, int]:
    """(predicted, measured) peak bytes of one case."""
    if case.workload in ("grad-pass", "nograd-pass"):
        kw: dict[str, Any] = {"grad": case.workload == "grad-pass"}
        body, autocast = role_pass_body, False
    else:
        kw, body, autocast = {}, BODIES[case.workload], case.workload == "lora-step"
    predicted = predict(body, case.setup, autocast=autocast, rounding=1, **kw).peak_bytes
    measured = measure_cpu(body, case.setup, autocast=autocast, **kw)
    return predicted, measured
