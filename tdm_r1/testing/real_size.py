"""Real-size transformers with random weights on the CPU: built fast, fingerprinted, measured.

The pieces behind ``tests/models/test_real_arch_cpu.py`` (and :mod:`tdm_r1.testing.real_size_runs`):

* :func:`random_transformer`: the released configuration (:mod:`tdm_r1.models.architectures`) built
  on the meta device (parameters only: buffers such as SD3's sin-cos position table are computed as
  the real model computes them), cast there, then given storage in the target dtype and filled by
  :func:`fill_random_`: 2.2 B (SD3.5-M) or 6.2 B (Z-Image) values in seconds, where
  ``torch.nn.init`` on the CPU takes minutes and a float32 build would need twice the memory.
* :func:`bf16_linears_in_fp32`: a CPU without bf16 instructions (AVX2 only: no AVX512-BF16 / AMX)
  runs a bf16 ``F.linear`` at ~10 GFLOP/s, a float32 one at 25-75. Inside this context every
  ``nn.Linear`` whose weight is bf16 on the CPU computes ``linear(x.float(), w.float()).to(bf16)``:
  the same bf16 operands, float32 accumulation, output rounded to bf16, i.e. what a bf16 GEMM
  computes, in another summation order. Weights stay bf16 in memory (the upcast copy of one
  weight lives only during its call). It changes how a matmul is executed, not what the code does.
* :func:`module_digest` (sha256 of the frozen weights' bytes), :func:`reset_peak_rss` /
  :func:`peak_rss_gib` (the kernel's ``VmHWM`` of this process, reset through ``clear_refs``).
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tdm_r1.models.architectures import SD35_MEDIUM_TRANSFORMER, Z_IMAGE_TRANSFORMER

#: Values of the shared random pool (a prime, so the rows of a matrix are not copies of each other).
POOL_SIZE = 4_194_301


def _pool(seed: int) -> torch.Tensor:
    return torch.randn(POOL_SIZE, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def fill_random_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic random weights, fast: each tensor is a stretch of one N(0, 1) pool.

    Matrices (and conv kernels, pad tokens) get ``N(0, 1/fan_in)`` values read cyclically from
    the pool at an offset given by the parameter's name (crc32), so every tensor differs; 1-D
    weights (norm scales) are 1 and biases 0, as a freshly initialised model has them. The
    activations keep unit scale through depth (outputs stay finite at every layer), which is what
    a random-weight run needs; the values mean nothing else.
    """
    pool = _pool(seed)
    for name, p in module.named_parameters():
        if p.ndim == 1:
            p.fill_(0.0 if name.endswith("bias") else 1.0)
            continue
        fan_in = p[0].numel() if p.ndim > 1 else 1
        flat, done, pos = p.view(-1), 0, zlib.crc32(name.encode()) % POOL_SIZE
        while done < flat.numel():
            k = min(flat.numel() - done, POOL_SIZE - pos)
            flat[done : done + k].copy_(pool[pos : pos + k])
            done, pos = done + k, 0
        p.mul_(fan_in**-0.5)
    return module


def random_transformer(
    model: str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0, overrides: dict[str, Any] | None = None
) -> nn.Module:
    """The released transformer of ``model`` ("sd3.5-medium" or "z-image") with random weights on the CPU.

    ``overrides`` change config values (e.g. fewer layers for a quick check of the same code path).
    """
    from accelerate import init_empty_weights

    if model == "sd3.5-medium":
        from diffusers import SD3Transformer2DModel as cls

        config = SD35_MEDIUM_TRANSFORMER
    elif model == "z-image":
        from diffusers import ZImageTransformer2DModel as cls

        config = Z_IMAGE_TRANSFORMER
    else:
        raise ValueError(f"unknown real-size model {model!r}; valid: sd3.5-medium, z-image")
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers computed for real
        module = cls(**{**config, **(overrides or {})})
    for sub in module.modules():
        for key, p in list(sub._parameters.items()):
            if p is not None and p.is_meta:
                sub._parameters[key] = nn.Parameter(torch.empty(p.shape, dtype=dtype), requires_grad=False)
    return fill_random_(module, seed).eval()


@contextlib.contextmanager
def bf16_linears_in_fp32() -> Iterator[None]:
    """bf16 CPU ``nn.Linear`` calls computed with float32 matmuls (see the module docstring)."""
    original = nn.Linear.forward

    def forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if w.dtype != torch.bfloat16 or w.device.type != "cpu":
            return original(self, x)
        b = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), w.float(), b).to(x.dtype)

    nn.Linear.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Linear.forward = original  # type: ignore[method-assign]


def frozen_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The base model's parameters (everything but LoRA tensors)."""
    return [(n, p) for n, p in module.named_parameters() if "lora_" not in n]


@torch.no_grad()
def module_digest(params: list[tuple[str, Any]]) -> str:
    """sha256 (16 hex) of the names and raw bytes of ``params`` (bf16 read as int16: exact)."""
    h = hashlib.sha256()
    for name, p in params:
        t = p.detach().contiguous()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.view(torch.int16)
        h.update(name.encode())
        h.update(t.numpy().data)
    return h.hexdigest()[:16]


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (``VmHWM``) to its current size; False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_gib() -> float:
    """Peak resident memory of this process since start or :func:`reset_peak_rss` (Linux ``VmHWM``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_note() -> str:
    """The machine, for the record: CPU model, cores, bf16 instructions, load average."""
    import os

    model, flags = "unknown CPU", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    bf16 = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2"))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores ({'/'.join(bf16) or 'no AVX'}), load average {load}"
