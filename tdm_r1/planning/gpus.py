"""Public specifications of the GPUs the planner predicts for, and the achieved-throughput assumptions.

Spec values are the vendors' data sheets (dense, i.e. without 2:4 sparsity; BF16 tensor-core math
with FP32 accumulation):

- H100 SXM5 80 GB: 989 TFLOP/s BF16, 3.35 TB/s HBM3 (NVIDIA H100 Tensor Core GPU data sheet).
- H200 SXM 141 GB: 989 TFLOP/s BF16, 4.8 TB/s HBM3e (NVIDIA H200 data sheet).
- A100 SXM 80 GB: 312 TFLOP/s BF16, 2.039 TB/s HBM2e (NVIDIA A100 data sheet).
- L40S 48 GB: 362 TFLOP/s BF16, 864 GB/s GDDR6 (NVIDIA L40S data sheet).
- RTX 4090 24 GB: 165 TFLOP/s BF16 with FP32 accumulate, 1008 GB/s GDDR6X (NVIDIA Ada Lovelace
  architecture whitepaper, appendix table).

``memory_gib`` is what ``nvidia-smi`` / ``torch.cuda.mem_get_info`` report as the card's total
(e.g. 81559 MiB on an H100 80 GB), not the marketing gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from tdm_r1.errors import ConfigError


@dataclass(frozen=True)
class GpuSpec:
    name: str
    label: str
    bf16_tflops: float  # dense
    bandwidth_tbs: float
    memory_gib: float


GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec("h100", "H100 SXM 80GB", 989.0, 3.35, 81559 / 1024),
    "h200": GpuSpec("h200", "H200 SXM 141GB", 989.0, 4.8, 143771 / 1024),
    "a100": GpuSpec("a100", "A100 SXM 80GB", 312.0, 2.039, 81920 / 1024),
    "l40s": GpuSpec("l40s", "L40S 48GB", 362.0, 0.864, 46068 / 1024),
    "rtx4090": GpuSpec("rtx4090", "RTX 4090 24GB", 165.2, 1.008, 24564 / 1024),
}
ALIASES = {"h100-sxm": "h100", "a100-80gb": "a100", "4090": "rtx4090", "rtx-4090": "rtx4090"}

#: Achieved fraction of the dense BF16 peak in eager PyTorch (no torch.compile, no fused optimiser
#: kernels), for the transformer's matmul/attention FLOPs: an assumption, not a measurement. Tuned
#: large-model training stacks report 46 % model FLOPs utilisation (PaLM, Chowdhery et al. 2022,
#: sec. 4.1) and 52 % of peak (Megatron-LM, Narayanan et al. 2021, 1T-parameter GPT on A100s);
#: an eager LoRA step on a frozen bf16 base adds many small rank-r matmuls, casts and elementwise
#: ops on top of its large GEMMs, so 0.40 is taken for training. Inference forwards have no
#: backward or optimiser and get 0.45. ``benchmarks/perf/gpu_check.py`` measures the real ratio.
ACHIEVED_COMPUTE = {"train": 0.40, "forward": 0.45}
#: Achieved fraction of the memory bandwidth for elementwise / normalisation traffic (STREAM-like
#: kernels reach 80-90 % of HBM peak; 0.7 accounts for PyTorch's unfused eager kernels).
ACHIEVED_BANDWIDTH = 0.70
#: CUDA context + cuBLAS/cuDNN handles and kernel images of a PyTorch process, outside the caching
#: allocator: ~0.5 GiB measured with nvidia-smi for CUDA 12 with lazy module loading (PyTorch docs,
#: "CUDA semantics / memory management": the context is not counted by memory_allocated).
CUDA_CONTEXT_GIB = 0.5
#: Caching-allocator fragmentation: reserved / allocated at the peak. 1.10 is typical of training
#: loops that free and reallocate activations every step (PyTorch memory-snapshot write-ups show
#: 5-15 %); ``benchmarks/perf/gpu_check.py`` measures it.
FRAGMENTATION = 1.10


def gpu(name: str) -> GpuSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in GPUS:
        raise ConfigError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")
    return GPUS[key]
