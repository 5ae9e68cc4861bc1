"""Generation speed and memory of the real architectures with random weights.

For SD3.5-Medium (transformer + SD3 VAE) and Z-Image 6B (transformer + FLUX VAE), at 512 and 1024
pixels and several batch sizes, measures through tdmbench's own adapters and sampler:

* the transformer alone: one ``adapter.velocity`` call (ms per image per NFE);
* a full 4-step generation: ``tdm_r1.models.sampling.sample`` with the model's 4-pass schedule (DPM-Solver++
  for SD3.5, Z-Image's 5 scheduled = 4 passes) plus VAE decode; text encoding is excluded (random
  conditioning of the real shapes);
* the peak GPU memory of the full generation.

Target: full 4-step generation <= 1.2 x (4 x transformer time) measured in the same run.
The markdown (and a JSON twin) is rewritten after every measurement, so a run cut short still
leaves its results. Anchor configurations are measured first.

    python benchmarks/perf/generation.py --device cuda --dtype bfloat16 [--quick]
    python benchmarks/perf/generation.py --device cpu --dtype float32 --configs reduced   # no GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

try:
    import diffusers  # noqa: E402
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise SystemExit(
        f"this benchmark needs diffusers (>= 0.36, with Z-Image): pip install diffusers ({exc})"
    ) from exc

from tdm_r1.devices import move_module  # noqa: E402
from tdm_r1.models.conditioning import Conditioning  # noqa: E402
from tdm_r1.models.families import prompt_tokens  # noqa: E402
from tdm_r1.models.sampling import sample  # noqa: E402
from tdm_r1.models.sd3 import SD3Adapter  # noqa: E402
from tdm_r1.models.spec import SamplingSpec  # noqa: E402
from tdm_r1.models.z_image import ZImageAdapter  # noqa: E402
from tdm_r1.testing import real_configs  # noqa: E402

#: H100, bf16, transformer alone, random weights (the issue's anchors): ms per image per NFE.
ANCHORS = {("sd3.5-medium", 512, 16): 9.75, ("sd3.5-medium", 1024, 4): 40.5, ("z-image", 1024, 4): 148.0}
TARGET_RATIO = 1.2
#: Z-Image keeps a prompt's real tokens only (at most 512): the perf runs use prompts of 128 tokens.
Z_IMAGE_PERF_TOKENS = 128


def text_tokens_note() -> str:
    """The text tokens per prompt the tables were measured with (recorded in their header)."""
    sd3 = prompt_tokens("sd3", {})
    return (
        f"sd3.5-medium {sd3['total']} ({sd3['fixed']} CLIP + {sd3['max_sequence_length']} T5, the presets' length); "
        f"z-image {Z_IMAGE_PERF_TOKENS} real tokens (of at most {prompt_tokens('z-image', {})['total']})"
    )


# Reduced configurations for CPU runs: the same architectures, narrower and shallower.
REDUCED = {
    "sd3.5-medium": dict(
        real_configs.SD35_MEDIUM_TRANSFORMER,
        num_layers=2,
        num_attention_heads=4,
        joint_attention_dim=256,
        caption_projection_dim=256,
        pooled_projection_dim=128,
        dual_attention_layers=(0,),
    ),
    "z-image": dict(
        real_configs.Z_IMAGE_TRANSFORMER,
        dim=256,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=256,
    ),
    "vae": dict(real_configs.SD3_VAE, block_out_channels=(32, 64, 64, 64), layers_per_block=1),
}


@dataclasses.dataclass
class Row:
    model: str
    resolution: int
    batch: int
    transformer_ms_per_img_nfe: float | None = None
    full_4step_ms_per_img: float | None = None
    ratio_vs_4x_transformer: float | None = None
    vae_ms_per_img: float | None = None
    vae_channels_last_ms_per_img: float | None = None
    peak_gib: float | None = None
    weights_gib: float | None = None
    anchor_ms: float | None = None
    note: str = ""


def build(cls: Any, config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random-weight module built directly on ``device`` in ``dtype``."""
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)
        with device:
            module = cls(**config)
    finally:
        torch.set_default_dtype(previous)
    move_module(module, device, dtype)
    return module.eval().requires_grad_(False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def make_adapter(model: str, reduced: bool, device: torch.device, dtype: torch.dtype) -> tuple[Any, int, int]:
    """(adapter, text tokens, text width) with random transformer + VAE weights and no text encoders."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel, ZImageTransformer2DModel

    if model == "sd3.5-medium":
        cfg = REDUCED[model] if reduced else real_configs.SD35_MEDIUM_TRANSFORMER
        vae_cfg = REDUCED["vae"] if reduced else real_configs.SD3_VAE
        transformer = build(SD3Transformer2DModel, cfg, device, dtype)
        vae = build(AutoencoderKL, vae_cfg, device, dtype)
        spec = SamplingSpec(steps=4, guidance=1.0, shift=3.0, solver="dpmsolver++")  # tdm-sd3.5-medium-4step
        adapter = SD3Adapter(transformer=transformer, vae=vae, sampling=spec, device=device, dtype=dtype)
        # CLIP 77 tokens + T5 128 tokens: the SD3 family's length (tdm_r1.models.families.SD3_TEXT)
        return adapter, int(prompt_tokens("sd3", {})["total"]), int(cfg["joint_attention_dim"])
    cfg = REDUCED[model] if reduced else real_configs.Z_IMAGE_TRANSFORMER
    vae_cfg = (
        dict(REDUCED["vae"], scaling_factor=0.3611, shift_factor=0.1159) if reduced else real_configs.FLUX_VAE
    )
    transformer = build(ZImageTransformer2DModel, cfg, device, dtype)
    vae = build(AutoencoderKL, vae_cfg, device, dtype)
    spec = SamplingSpec(steps=5, guidance=1.0, shift=3.0, spacing="zero-terminal")  # z-image-4step: 4 passes
    adapter = ZImageAdapter(transformer=transformer, vae=vae, sampling=spec, device=device, dtype=dtype)
    return adapter, Z_IMAGE_PERF_TOKENS, int(cfg["cap_feat_dim"])


def conditioning(
    model: str, batch: int, tokens: int, width: int, device: torch.device, dtype: torch.dtype
) -> Conditioning:
    g = torch.Generator(device="cpu").manual_seed(1)
    embeds = torch.randn(batch, tokens, width, generator=g).to(device, dtype)
    if model == "sd3.5-medium":
        pooled_dim = int(REDUCED[model]["pooled_projection_dim"]) if width != 4096 else 2048
        return Conditioning(
            embeds=embeds, pooled=torch.randn(batch, pooled_dim, generator=g).to(device, dtype)
        )
    return Conditioning(embeds=embeds, mask=torch.ones(batch, tokens, dtype=torch.bool, device=device))


def measure(
    adapter: Any, model: str, res: int, batch: int, text: tuple[int, int], args: argparse.Namespace
) -> Row:
    device, dtype = adapter.device, adapter.dtype
    row = Row(model=model, resolution=res, batch=batch, anchor_ms=ANCHORS.get((model, res, batch)))
    cond = conditioning(model, batch, text[0], text[1], device, dtype)
    noise = adapter.initial_noise(list(range(batch)), res, res).to(device)
    schedule = adapter.schedule(height=res, width=res)
    sigma = torch.full((batch,), float(schedule.model_sigmas[0]), device=device)
    warmup, iters = (1, 2) if args.quick else (1, 3)

    with torch.no_grad():
        t_fwd = timed(lambda: adapter.velocity(noise, sigma, cond), device, warmup, iters)
        row.transformer_ms_per_img_nfe = 1000 * t_fwd / batch

        def full() -> torch.Tensor:
            traj = sample(adapter, cond, noise, schedule, return_x0=False)
            assert traj.nfe == 4
            return adapter.decode(traj.final, batch_size=args.vae_batch)

        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
        t_full = timed(full, device, warmup, max(1, iters - 1))
        if device.type == "cuda":
            row.peak_gib = (torch.cuda.max_memory_allocated(device) - resident) / 2**30
    row.full_4step_ms_per_img = 1000 * t_full / batch
    row.ratio_vs_4x_transformer = t_full / (4 * t_fwd)
    # the VAE decode alone, in both memory formats (the full run above used args.vae_format)
    latents = noise * 0.5
    with torch.no_grad():
        for channels_last in (False, True):
            adapter.set_vae_channels_last(channels_last)
            t_vae = timed(lambda: adapter.decode(latents, batch_size=args.vae_batch), device, 1, 2)
            if channels_last:
                row.vae_channels_last_ms_per_img = 1000 * t_vae / batch
            else:
                row.vae_ms_per_img = 1000 * t_vae / batch
    adapter.set_vae_channels_last(args.vae_format == "channels_last")
    return row


def fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write(rows: list[Row], args: argparse.Namespace, header: dict[str, Any], done: bool) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Generation speed and memory (random weights)",
        "",
        "Written by `benchmarks/perf/generation.py`; do not edit by hand.",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines.append(f"- **status**: {'complete' if done else 'in progress / cut short'}")
    lines += [
        "",
        "Transformer = one `adapter.velocity` call (ms per image per NFE). Full = 4-pass generation through "
        "`tdm_r1.models.sampling.sample` (SD3.5: DPM-Solver++ 4 steps; Z-Image: 5 scheduled steps, the last of "
        "zero length) + VAE decode, text encoding excluded (ms per image). "
        f"Ratio = full / (4 x transformer); target <= {TARGET_RATIO}. Peak GiB = the model's own weights + the "
        "peak working memory of the full generation (CUDA only; other resident models excluded).",
        "",
        "| model | res | batch | transformer ms/img/NFE | anchor (H100) | full 4-step ms/img | ratio | target met | "
        "VAE decode ms/img | VAE channels-last ms/img | peak GiB | weights GiB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = (
            ""
            if r.ratio_vs_4x_transformer is None
            else ("yes" if r.ratio_vs_4x_transformer <= TARGET_RATIO else "no")
        )
        lines.append(
            f"| {r.model} | {r.resolution} | {r.batch} | {fmt(r.transformer_ms_per_img_nfe)} | {fmt(r.anchor_ms)} | "
            f"{fmt(r.full_4step_ms_per_img)} | {fmt(r.ratio_vs_4x_transformer)} | {met} | {fmt(r.vae_ms_per_img)} | "
            f"{fmt(r.vae_channels_last_ms_per_img)} | {fmt(r.peak_gib)} | {fmt(r.weights_gib)} | {r.note} |"
        )
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(
        json.dumps(
            {"header": header, "complete": done, "rows": [dataclasses.asdict(r) for r in rows]}, indent=2
        )
        + "\n"
    )


def plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    models = args.models.split(",")
    if args.quick:
        anchors = [k for k in ANCHORS if k[0] in models]
        return anchors if not args.reduced else [(m, r // 4, b) for m, r, b in anchors]
    resolutions = [int(x) for x in args.resolutions.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    wanted = [(m, r, b) for m in models for r in resolutions for b in batches]
    anchors = [k for k in ANCHORS if k in wanted]
    rest = sorted(
        (k for k in wanted if k not in anchors),
        key=lambda k: k[1] ** 2 * k[2] * (3 if k[0] == "z-image" else 1),
    )
    return anchors + rest  # anchors first, then cheapest first: a budget cut drops the most expensive


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 (GPU default) | float32 (CPU default)")
    parser.add_argument(
        "--configs", choices=("real", "reduced"), default=None, help="default: real on GPU, reduced on CPU"
    )
    parser.add_argument("--models", default="sd3.5-medium,z-image")
    parser.add_argument("--resolutions", default=None, help="default: 512,1024 (real) / 128,256 (reduced)")
    parser.add_argument("--batches", default=None, help="default: 1,4,16 (real) / 1,4 (reduced)")
    parser.add_argument("--quick", action="store_true", help="anchor configurations only, fewer iterations")
    parser.add_argument("--vae-batch", type=int, default=8, help="VAE decode chunk (bounds memory)")
    parser.add_argument(
        "--vae-format",
        choices=("contiguous", "channels_last"),
        default="contiguous",
        help="VAE memory format",
    )
    parser.add_argument(
        "--budget-s", type=float, default=140.0, help="stop starting new measurements after this"
    )
    parser.add_argument("--note", default="", help="free text added to the header (machine load, ...)")
    parser.add_argument("--out", default=str(REPO / "results" / "perf" / "generation.md"))
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    args.reduced = (args.configs or ("real" if device.type == "cuda" else "reduced")) == "reduced"
    args.resolutions = args.resolutions or ("128,256" if args.reduced else "512,1024")
    args.batches = args.batches or ("1,4" if args.reduced else "1,4,16")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    elif device.type == "meta":  # shape/code-path check of the real configs without memory; times meaningless
        import torch.fx.experimental._config as fx_config

        fx_config.meta_nonzero_assume_all_nonzero = True  # Z-Image selects caption tokens with a mask
        name = "meta (shape check only: timings are meaningless)"
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    header = {
        "device": name,
        "VAE memory format in the full run": args.vae_format,
        "dtype": str(dtype).replace("torch.", ""),
        "configs": "REDUCED (narrow/shallow versions of the real architectures: numbers are NOT comparable "
        "to the H100 anchors)"
        if args.reduced
        else "real (SD3.5-Medium transformer 2.24 B + SD3 VAE; Z-Image transformer 6.15 B + FLUX VAE)",
        "versions": f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}",
        "attention": "PyTorch SDPA (diffusers default processors)",
        "text tokens per prompt": text_tokens_note(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.note:
        header["note"] = args.note
    start = time.perf_counter()
    rows: list[Row] = []
    todo = plan(args)
    write(rows, args, header, done=False)
    # every model stays resident (SD3.5-M 4.2 GiB + Z-Image 11.5 GiB in bf16), so the anchors of all
    # models are measured first and a budget cut only drops the extra configurations
    built: dict[str, tuple[Any, int, int, float | None]] = {}
    for model in dict.fromkeys(m for m, _, _ in todo):
        t0 = time.perf_counter()
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        adapter, tokens, width = make_adapter(model, args.reduced, device, dtype)
        adapter.set_vae_channels_last(args.vae_format == "channels_last")
        weights = (torch.cuda.memory_allocated(device) - before) / 2**30 if device.type == "cuda" else None
        built[model] = (adapter, tokens, width, weights)
        print(
            f"[{time.perf_counter() - start:6.1f}s] built {model} in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
    for model, res, batch in todo:
        adapter, tokens, width, weights = built[model]
        estimate = estimate_seconds(rows, model, res, batch)
        if time.perf_counter() - start + estimate > args.budget_s:
            rows.append(Row(model, res, batch, note=f"skipped: time budget (needs ~{estimate:.0f} s)"))
            write(rows, args, header, done=False)
            continue
        try:
            row = measure(adapter, model, res, batch, (tokens, width), args)
        except torch.OutOfMemoryError:
            row = Row(model, res, batch, note="out of memory")
            torch.cuda.empty_cache()
        row.weights_gib = weights
        if row.peak_gib is not None and weights is not None:
            row.peak_gib += weights  # measure() reports working memory above everything resident
        rows.append(row)
        write(rows, args, header, done=False)
        print(f"[{time.perf_counter() - start:6.1f}s] {row}", flush=True)
    header["total wall time"] = f"{time.perf_counter() - start:.0f} s"
    write(rows, args, header, done=True)
    print(f"wrote {args.out}")


def estimate_seconds(rows: list[Row], model: str, res: int, batch: int) -> float:
    """Rough duration of one measurement from the rows measured so far."""
    known = [r for r in rows if r.model == model and r.transformer_ms_per_img_nfe is not None]
    if not known:
        return 0.0
    ref = min(known, key=lambda r: abs(r.resolution - res))
    per_image = ref.transformer_ms_per_img_nfe * (res / ref.resolution) ** 2  # type: ignore[operator]
    return 24 * per_image * batch / 1000  # ~20 passes + ~9 VAE decodes


if __name__ == "__main__":
    main()
