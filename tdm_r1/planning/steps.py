"""One step of each workload, written once and run either under the tracer (prediction) or for real.

``lora-step``: one LoRA training step of the transformer alone (base bf16 frozen, LoRA rank r /
alpha 2r fp32 on the family's attention projections, AdamW fp32 state, CUDA autocast bf16,
loss = mean square of the output, backward, optimiser step). The step runs twice and the second
is the one reported: that is the steady state (optimiser state allocated, gradients freed by
``zero_grad(set_to_none=True)`` between steps).

``forward``: one transformer forward at batch B in bf16 without autograd (an NFE of inference).

``role pass``: what a recipe composes (:mod:`tdm_r1.planning.recipe`): one forward with a trainable
role and its backward, or one no-grad forward, in the adapter's own numerics (bf16 base, fp32 LoRA,
no autocast: the trainer runs none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from tdm_r1.planning.trace import CUDA_BLOCK, Tracer
from tdm_r1.planning.workloads import (
    ModelShape,
    add_lora,
    build_transformer,
    enable_checkpointing,
    make_forward,
    model_tensors,
    static_bytes,
    use_role,
)


class Probe(Protocol):
    """Marks regions of a step: the tracer records peaks; a real run may measure them."""

    def phase(self, name: str) -> AbstractContextManager[None]: ...
    def restart(self) -> None: ...


class NullProbe:
    def phase(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()

    def restart(self) -> None:
        pass


@dataclass(frozen=True)
class Setup:
    """A workload's knobs (the CLI's options)."""

    shape: ModelShape
    batch: int
    resolution: int
    rank: int = 32
    grad_checkpointing: bool = False
    text_tokens: int | None = None


@dataclass
class StepResult:
    """Predicted bytes (static: parameters and buffers before the step; peak: static + the step's
    peak above it), FLOPs of the reported step, bytes written, and peaks of named phases."""

    static_bytes: int
    peak_bytes: int
    flops: int
    allocated_bytes: int
    phases: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)


def lora_step_body(
    setup: Setup, device: torch.device
) -> tuple[list[torch.Tensor], Callable[[Probe], None], dict[str, int]]:
    """Build the model and return (static tensors, ``run(probe)``, parameter counts)."""
    model = build_transformer(setup.shape, device)
    lora = add_lora(model, "generator", rank=setup.rank, trainable=True, targets=setup.shape.targets)
    if setup.grad_checkpointing:
        enable_checkpointing(model, device)
    model.train()
    call = make_forward(setup.shape, setup.batch, setup.resolution, device, setup.text_tokens)
    opt = torch.optim.AdamW(lora, lr=1e-4, foreach=True)
    counts = {"frozen": sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in lora)}
    counts["trainable"] = sum(p.numel() for p in lora)

    def run(probe: Probe) -> None:
        for i in range(2):
            if i == 1:
                probe.restart()
            with probe.phase("forward"), autocast_bf16(device):
                out = call(model)
                loss = out.float().pow(2).mean()
            with probe.phase("backward"):
                loss.backward()
                del out, loss
            with probe.phase("optimizer"):
                opt.step()
                opt.zero_grad(set_to_none=True)

    return model_tensors(model), run, counts


def forward_body(
    setup: Setup, device: torch.device
) -> tuple[list[torch.Tensor], Callable[[Probe], None], dict[str, int]]:
    model = build_transformer(setup.shape, device)
    call = make_forward(setup.shape, setup.batch, setup.resolution, device, setup.text_tokens)

    def run(probe: Probe) -> None:
        with torch.no_grad(), probe.phase("forward"):
            out = call(model)
        del out

    return model_tensors(model), run, {"frozen": sum(p.numel() for p in model.parameters()), "trainable": 0}


def role_pass_body(
    setup: Setup, device: torch.device, *, grad: bool
) -> tuple[list[torch.Tensor], Callable[[Probe], None], dict[str, int]]:
    """A recipe's unit: a forward of one LoRA role (with its backward when ``grad``), adapter numerics."""
    model = build_transformer(setup.shape, device)
    lora = add_lora(model, "role", rank=setup.rank, trainable=grad, targets=setup.shape.targets)
    use_role(model, "role")
    if setup.grad_checkpointing and grad:
        enable_checkpointing(model, device)
        model.train()
    call = make_forward(setup.shape, setup.batch, setup.resolution, device, setup.text_tokens)

    def run(probe: Probe) -> None:
        if not grad:
            with torch.no_grad(), probe.phase("forward"):
                out = call(model).float()
            del out
            return
        for i in range(2):  # the second pass accumulates into existing gradients (the steady state)
            if i == 1:
                probe.restart()
            with probe.phase("forward"):
                out = call(model).float()
                loss = out.pow(2).mean()
            with probe.phase("held"):  # what the pass keeps while the method runs no-grad queries
                pass
            with probe.phase("backward"):
                loss.backward()
                del out, loss

    return model_tensors(model), run, {"trainable": sum(p.numel() for p in lora)}


@contextmanager
def autocast_bf16(device: torch.device) -> Iterator[None]:
    """Real autocast on a GPU; elsewhere the tracer's :class:`GpuSemantics` emulates CUDA's policy."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


BODIES = {"lora-step": lora_step_body, "forward": forward_body}


def predict(
    body: Callable[..., tuple[list[torch.Tensor], Callable[[Probe], None], dict[str, int]]],
    setup: Setup,
    *,
    autocast: bool,
    device: str = "meta",
    rounding: int = CUDA_BLOCK,
    sdpa: str = "efficient",
    **kw: Any,
) -> StepResult:
    """Trace ``body`` on ``device`` (meta: no memory, no compute) and account its storage."""
    dev = torch.device(device)
    tensors, run, counts = body(setup, dev, **kw)
    static = static_bytes(tensors, rounding)
    del tensors
    tracer = Tracer(autocast=torch.bfloat16 if autocast else None, rounding=rounding, sdpa=sdpa)
    with tracer.run() as result:
        run(tracer)
    return StepResult(
        static_bytes=static,
        peak_bytes=static + result.peak_bytes,
        flops=result.flops,
        allocated_bytes=result.allocated_bytes,
        phases={k: static + v for k, v in result.phases.items()},
        params=counts,
    )
