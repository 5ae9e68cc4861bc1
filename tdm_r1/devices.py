"""The one rule for torch device and dtype defaults (models, rewards, the CLI).

* device ``None`` -> ``cuda`` when a CUDA GPU is visible, else ``cpu``; anything else is taken as
  ``torch.device`` reads it (``"cpu"``, ``"cuda:1"``, ``"mps"``).
* dtype ``None`` -> float32 on the CPU (bfloat16 matmuls are slow there and float16 is
  unsupported), else the caller's ``default`` (a model preset's ``dtype``, "bfloat16" unless set);
  names may be spelled ``float32`` / ``fp32`` / ``float``, ``float16`` / ``fp16`` / ``half``,
  ``bfloat16`` / ``bf16``.
"""

from __future__ import annotations

import torch
from torch import nn

from tdm_r1.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def default_device() -> torch.device:
    """``cuda`` when a CUDA GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A ``torch.device``; None -> :func:`default_device`."""
    if device is None:
        return default_device()
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc} (e.g. cpu, cuda, cuda:1)") from exc


def resolve_dtype(
    dtype: str | torch.dtype | None,
    device: str | torch.device | None = None,
    default: str = "bfloat16",
) -> torch.dtype:
    """A ``torch.dtype`` from a dtype or a name; None -> float32 on the CPU, ``default`` elsewhere."""
    if dtype is None:
        return torch.float32 if resolve_device(device).type == "cpu" else resolve_dtype(default)
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ConfigError(f"dtype {dtype} is not supported; use float32, float16 or bfloat16")
        return dtype
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(sorted(DTYPES))}")
    return DTYPES[key]


def _same_device(have: torch.device, want: torch.device) -> bool:
    """Whether a tensor on ``have`` is already on ``want`` (``cuda`` without an index = the current one)."""
    if have.type != want.type:
        return False
    if want.index is None:
        return have.type != "cuda" or have.index == torch.cuda.current_device()
    return have.index == want.index


def move_module(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """``module.to(device, dtype)``, skipping what would not change anything.

    * no ``Module.to()`` at all when every parameter and buffer is already on ``device`` and the
      parameters are in ``dtype`` (diffusers warns on a needless cast);
    * the dtype cast only when the first parameter is not in ``dtype`` already;
    * a module on the meta device (built without weights, e.g. to plan a real-size model) stays
      there whatever ``device`` says: it has no data to move (``Module.to()`` would raise), and
      ``to_empty`` / loading the weights is what puts it on a device. Its dtype is still cast.
    """
    tensors = [*module.parameters(), *module.buffers()]
    if not tensors:
        return
    first = next(module.parameters(), None)
    cast = first is None or first.dtype != dtype
    if any(t.is_meta for t in tensors):
        if cast:
            module.to(dtype=dtype)
        return
    move = not all(_same_device(t.device, device) for t in tensors)
    if move and cast:
        module.to(device=device, dtype=dtype)
    elif move:
        module.to(device=device)
    elif cast:
        module.to(dtype=dtype)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far, in MiB.

    On CUDA the allocator's peak (tensors only, what a batch size is limited by); elsewhere the
    process's peak resident set size (weights, activations, Python and libraries), the number a CPU
    run's memory limit is about. The two are not comparable with each other. On Linux it is this
    address space's own peak (``VmHWM``): ``ru_maxrss`` also keeps the peak of the parent a child
    was started from (across fork and exec), which would charge a spawned run with its parent.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    from pathlib import Path

    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
