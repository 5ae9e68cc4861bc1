"""Trace one step without weights: live tensor storage (allocations, frees, saved-for-backward) and FLOPs.

The model is built on the ``meta`` device (shapes and dtypes, no data), so a 2 B- or 6 B-parameter
transformer costs nothing to build; every op still runs its meta kernel, so autograd saves exactly
what it would save on a GPU. Two modes stack during a trace:

- :class:`StorageTracker` (a ``TorchDispatchMode``, below autograd): every storage an op returns is
  counted when it appears and uncounted when its last reference dies (a weak reference to the
  C++ storage, swept at each op), so the running total is the bytes the allocator would hold:
  parameters, activations saved for backward, temporaries, gradients, optimiser state. The idea is
  the one of ``torch.distributed._tools.mem_tracker.MemTracker`` (PyTorch), kept small and
  independent of module hooks.
- :class:`GpuSemantics` (a ``TorchFunctionMode``, above autograd, so casts it inserts are recorded
  as the GPU would record them): attention runs as the GPU runs it (memory-efficient SDPA: saves
  the output and a (B, H, L) log-sum-exp, never the (L, L) score matrix that the meta/CPU math path
  would materialise), and, when asked, CUDA autocast's casting policy (``torch.autocast`` itself is
  disabled without a CUDA device): the op lists of the "CUDA Ops that can autocast to float16 /
  float32" tables of the PyTorch AMP documentation (https://pytorch.org/docs/stable/amp.html).
- FLOPs of every matmul, convolution and attention, with the per-op formulas of
  ``torch.utils.flop_counter`` (counted by the tracker itself, see :class:`StorageTracker`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import flop_registry

#: The CUDA caching allocator rounds every block up to a multiple of 512 bytes (c10/cuda/CUDACachingAllocator.cpp,
#: ``kMinBlockSize``); the CPU allocator aligns to 64 bytes and is measured exactly (rounding 1).
CUDA_BLOCK = 512


def storage_bytes(t: torch.Tensor) -> int:
    return int(t.untyped_storage().nbytes())


class StorageTracker(TorchDispatchMode):
    """Bytes of live tensor storage created while active; ``peak`` since the last :meth:`reset_peak`.

    FLOPs are counted here too, with ``torch.utils.flop_counter``'s per-op formulas: its
    ``FlopCounterMode`` also tracks modules with backward hooks, which keep the tensors of
    checkpointed blocks alive and would distort the memory being measured.

    Storages that exist before the tracker starts (parameters, inputs) are not counted: callers add
    them from the objects themselves. ``allocated`` sums every new storage (a proxy for memory
    traffic: each byte is written once and read about once).
    """

    def __init__(self, rounding: int = CUDA_BLOCK) -> None:
        super().__init__()
        self.rounding = rounding
        self._live: dict[int, tuple[int, StorageWeakRef]] = {}
        self.current = 0
        self.peak = 0
        self.allocated = 0
        self.flops = 0

    def _round(self, n: int) -> int:
        return n if self.rounding <= 1 else -(-n // self.rounding) * self.rounding

    def _sweep(self) -> None:
        """Uncount storages that died. A full scan at every op: autograd frees saved tensors in C++
        (no Python object dies, so weakref callbacks would miss them); ``_expired`` on the weak
        C++ handle is the cheap check (~0.1 us)."""
        expired = torch.UntypedStorage._expired
        dead = [k for k, (_, ref) in self._live.items() if expired(ref.cdata)]
        for k in dead:
            self.current -= self._live.pop(k)[0]

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st._cdata
        old = self._live.get(key)
        if old is not None and not old[1].expired():
            return  # a view or an in-place result: same storage
        if old is not None:  # the address was freed and reused inside one op
            self.current -= old[0]
        n = self._round(int(st.nbytes()))
        self._live[key] = (n, StorageWeakRef(st))
        self.current += n
        self.allocated += n
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func.overloadpacket)
        if count is not None:
            self.flops += int(count(*args, **kwargs, out_val=out))
        self._sweep()
        # an output sharing an input's storage (a view, an in-place op) allocates nothing; this also
        # keeps views of untracked storages (parameters, inputs) out of the count
        inputs = {
            t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in inputs:
                self.track(t)
        return out

    def refresh(self) -> int:
        """Current live bytes after dropping storages that died since the last op."""
        self._sweep()
        return self.current

    def reset_peak(self) -> None:
        self.peak = self.refresh()


# ------------------------------------------------------------------------------- GPU semantics
class _EfficientAttention(torch.autograd.Function):
    """``scaled_dot_product_attention`` through the memory-efficient kernel's aten ops.

    Forward saves q, k, v, the output and the (B, H, L) fp32 log-sum-exp; backward recomputes the
    scores blockwise (xFormers / PyTorch ``_scaled_dot_product_efficient_attention``). Both ops have
    meta kernels and FLOP formulas, so shapes, saved bytes and FLOPs are the GPU's.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Any, scale: Any) -> Any:
        need = any(t.requires_grad for t in (q, k, v))
        out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, need, 0.0, False, scale=scale
        )
        ctx.save_for_backward(q, k, v, out, lse, seed, offset)
        ctx.bias, ctx.scale = bias, scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        q, k, v, out, lse, seed, offset = ctx.saved_tensors
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            grad.contiguous(),
            q,
            k,
            v,
            ctx.bias,
            out,
            lse,
            seed,
            offset,
            0.0,
            [True, True, True, False],
            scale=ctx.scale,
        )
        return dq, dk, dv, None, None


def efficient_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Drop-in for ``F.scaled_dot_product_attention`` with the GPU kernel's memory (no dropout, no causal)."""
    q, k, v = query, key, value
    if dropout_p or is_causal:
        raise NotImplementedError("the planner models attention without dropout or a causal mask")
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    bias = None
    if attn_mask is not None:
        bias = attn_mask
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~attn_mask, -math.inf
            )
        bias = bias.to(q.dtype).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return _EfficientAttention.apply(q, k, v, bias, scale)


def _fn(*names: str) -> set[Any]:
    out = set()
    for name in names:
        for owner in (torch, F, torch.Tensor):
            if hasattr(owner, name):
                out.add(getattr(owner, name))
    return out


#: PyTorch AMP docs, "CUDA Ops that can autocast to float16" (bf16 here) and "... to float32"
#: (the ones a diffusion transformer calls; the full tables list losses and rarer ops too).
AUTOCAST_LOW = _fn("linear", "matmul", "__matmul__", "mm", "bmm", "baddbmm", "addmm", "conv2d", "conv1d")
AUTOCAST_FP32 = _fn(
    "layer_norm", "group_norm", "softmax", "log_softmax", "pow", "__pow__", "exp", "log", "rsqrt",
    "sum", "cumsum", "norm", "mse_loss", "softplus",
)  # fmt: skip
SDPA = {F.scaled_dot_product_attention}


def _cast(obj: Any, dtype: torch.dtype, only_from: tuple[torch.dtype, ...]) -> Any:
    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dtype in only_from and x.dtype != dtype:
            return x.to(dtype)
        return x

    return tree_map(one, obj)


class GpuSemantics(TorchFunctionMode):
    """Attention as the GPU's memory-efficient kernel and, optionally, CUDA autocast (bf16).

    ``sdpa="native"`` leaves attention to the device's own kernel (the CPU's flash kernel also
    saves only the output and the log-sum-exp: the CPU validation measures it for real).
    """

    #: the innermost active instance (a checkpointed block's recomputation re-enters it)
    active: GpuSemantics | None = None

    def __init__(self, autocast: torch.dtype | None = None, sdpa: str = "efficient") -> None:
        super().__init__()
        self.autocast = autocast
        self.sdpa = sdpa
        self._outer: GpuSemantics | None = None

    def __enter__(self) -> GpuSemantics:
        self._outer, GpuSemantics.active = GpuSemantics.active, self
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        GpuSemantics.active = self._outer
        super().__exit__(*exc)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in SDPA:
            if self.autocast is not None:
                args, kwargs = _cast((args, kwargs), self.autocast, (torch.float32,))
            return efficient_sdpa(*args, **kwargs) if self.sdpa == "efficient" else func(*args, **kwargs)
        if self.autocast is not None:
            if func in AUTOCAST_LOW:
                args, kwargs = _cast((args, kwargs), self.autocast, (torch.float32, torch.float16))
            elif func in AUTOCAST_FP32:
                args, kwargs = _cast((args, kwargs), torch.float32, (torch.bfloat16, torch.float16))
        return func(*args, **kwargs)


def recompute_context() -> tuple[Any, Any]:
    """``context_fn`` for ``torch.utils.checkpoint``: recompute under the semantics of the forward
    (the backward runs outside the mode stack of the forward's caller)."""
    now = GpuSemantics.active
    return nullcontext(), (GpuSemantics(now.autocast, now.sdpa) if now is not None else nullcontext())


# ------------------------------------------------------------------------------------ a trace
@dataclass
class Trace:
    """What one traced region did: peak and final live bytes above its start, FLOPs, traffic."""

    peak_bytes: int = 0
    end_bytes: int = 0
    flops: int = 0
    allocated_bytes: int = 0
    phases: dict[str, int] = field(default_factory=dict)


class Tracer:
    """One tracking session; :meth:`phase` marks named regions, :meth:`restart` starts the reported step."""

    def __init__(
        self, *, autocast: torch.dtype | None = None, rounding: int = CUDA_BLOCK, sdpa: str = "efficient"
    ) -> None:
        self.memory = StorageTracker(rounding)
        self.semantics = GpuSemantics(autocast, sdpa)
        self.result = Trace()
        self._base = 0
        self._flops0 = 0
        self._alloc0 = 0

    @contextmanager
    def run(self) -> Iterator[Trace]:
        """Trace the block's work (fake tensors, memory tracked); the yielded :class:`Trace` fills in."""
        with self.semantics, self.memory:
            self._base = self.memory.refresh()
            yield self.result
            end = self.memory.refresh()
        r = self.result
        r.peak_bytes = self.memory.peak - self._base
        r.end_bytes = end - self._base
        r.flops = self.memory.flops - self._flops0
        r.allocated_bytes = self.memory.allocated - self._alloc0

    def restart(self) -> None:
        """Report from here on (e.g. the second, steady-state step): peak, FLOPs and traffic restart."""
        self.memory.reset_peak()
        self._flops0 = self.memory.flops
        self._alloc0 = self.memory.allocated

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the peak above the run's start reached inside this region (``phases[name]``)."""
        outer = self.memory.peak
        self.memory.reset_peak()
        try:
            yield
        finally:
            self.result.phases[name] = self.memory.peak - self._base
            self.memory.peak = max(outer, self.memory.peak)

    def live(self) -> int:
        """Bytes live now above the run's start."""
        return self.memory.refresh() - self._base
