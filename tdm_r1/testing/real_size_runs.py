"""One TDM-R1 micro-step on the full SD3.5-Medium and one Z-Image 4-step pass, on the CPU.

``tests/models/test_real_arch_cpu.py`` (``make test-slow``) runs both and checks them; with
``TDMBENCH_PERF_OUT=results/perf/real_arch_cpu.md`` it also writes their time and peak memory.

:func:`tdm_r1_micro_step` puts a :class:`~tdm_r1.train.trainer.Trainer` together around the full
SD3.5-Medium transformer with random bf16 weights exactly as ``Trainer.setup`` would leave it
(as ``benchmarks/perf/train_methods.py`` does: the public ``sd3.5m-ocr-1gpu`` recipe, micro-batch
1 of a group of 2, 128 px), so the project's own code builds the roles and their LoRA targets
(``Trainer._build_method``: generator, fake, surrogate, surrogate_old, one AdamW per trainable
role, the generator EMA, gradient checkpointing), then runs the method's three steps as
``TdmR1.train_micro`` does for one boundary (``fake_step``, ``surrogate_step``, ``generator_step``;
called directly, as ``benchmarks/perf/train.py`` does: with a group larger than the micro-batch
``train_micro`` would first score the whole group through the text encoders) and
``Trainer._step`` of each trainable role (clip, AdamW, EMA, ``after_update``). It records what
the checks need: the losses, which LoRA tensors got gradients, each role's digest before and
after, the frozen base's digest before and after. Text encoders are absent: conditioning of the
real shapes (77 CLIP + 128 T5 tokens of width 4096, pooled 2048) is random; so is the rollout.

:func:`z_image_pass` samples once with the ``z-image-4step`` preset's schedule (4 transformer
passes) through :func:`tdm_r1.models.sampling.sample`, with the preset's LoRA layout as role
``generator`` on the full Z-Image transformer (random bf16 weights), 128 px, forward only.
No VAE in either (the micro-step and the pass need the transformer only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import time
from pathlib import Path
from typing import Any

import torch

from tdm_r1.models.conditioning import Conditioning
from tdm_r1.models.roles import file_key
from tdm_r1.testing import real_size

#: Z-Image keeps a prompt's real tokens only; a short prompt with the chat template is ~30.
Z_IMAGE_TOKENS = 32
#: The rollout boundary of the fake and generator steps (< trunc_steps: the surrogate-reward term is on).
BOUNDARY = 1


@dataclasses.dataclass
class Run:
    """One measured run and what its checks read."""

    what: str
    model: str
    resolution: int
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    peak_gib: float = 0.0
    parameters: int = 0
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    #: role -> (tensors with a gradient, tensors with a non-zero gradient, all finite)
    grads: dict[str, tuple[int, int, bool]] = dataclasses.field(default_factory=dict)
    digests_before: dict[str, str] = dataclasses.field(default_factory=dict)
    digests_after: dict[str, str] = dataclasses.field(default_factory=dict)
    #: surrogate_old after the step equals the soft update of its copy towards the new surrogate
    copy_follows: bool | None = None
    base_grads: int = 0
    output: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""


def sd3_conditioning(n: int, seed: int = 1) -> Conditioning:
    """Random SD3.5 conditioning of ``n`` prompts (bf16, the real shapes)."""
    g = torch.Generator().manual_seed(seed)
    text = real_size_text()
    embeds = torch.randn(n, text["tokens"], text["width"], generator=g)
    pooled = torch.randn(n, text["pooled"], generator=g)
    return Conditioning(embeds=embeds.to(torch.bfloat16), pooled=pooled.to(torch.bfloat16))


def real_size_text() -> dict[str, int]:
    """SD3.5's text conditioning of one prompt: 77 CLIP + 128 T5 tokens of width 4096, pooled 2048."""
    from tdm_r1.models.architectures import SD3_TEXT
    from tdm_r1.models.families import prompt_tokens

    return {"tokens": int(prompt_tokens("sd3", {})["total"]), "width": SD3_TEXT["width"], "pooled": 2048}


def _trainer(adapter: Any, res: int) -> Any:
    from tdm_r1.models.preset import resolve_model
    from tdm_r1.registry import METHODS
    from tdm_r1.train.config import load_train_config, trainable_steps
    from tdm_r1.train.trainer import Trainer

    cfg = load_train_config(
        "sd3.5m-ocr-1gpu",
        overrides=[
            "name=real-arch-cpu",
            "method.micro_batch=1",
            "method.num_train_timesteps=1",
            "rollout.prompts_per_epoch=1",
            "rollout.group_size=2",  # the smallest group a reward allows
            "rollout.batch_size=1",
            f"model.height={res}",
            f"model.width={res}",
        ],
    )
    preset = resolve_model(cfg.model.name)
    t = Trainer(cfg)
    t._method_cls = METHODS.get(cfg.method_name)
    t._method_cls.check(cfg, preset)
    null = sd3_conditioning(1, seed=2)  # not the prompts' own: CFG (rl_cfg, teacher_cfg) must do something
    adapter.null_conditioning = lambda n: null.repeat(n)  # no text encoders: the empty prompt's shape
    t.preset, t.adapter, t.device, t.world, t.rank, t.epoch = preset, adapter, torch.device("cpu"), 1, 0, 0
    t.infer_steps = preset.sampling.steps
    t.steps = t._method_cls.rollout_steps(cfg) or t.infer_steps
    t.schedule = adapter.schedule(t.steps, spacing=cfg.model.spacing)
    t.sigmas, t.model_sigmas = t.schedule.sigmas.float(), t.schedule.model_sigmas.float()
    t.train_steps = trainable_steps(t.sigmas, cfg.method.min_step)
    t.shift = cfg.method.shift if cfg.method.shift is not None else adapter.sampling.shift
    t.method = t._build_method()  # the method's roles, LoRA targets, optimisers, EMA, checkpointing
    return t


def tdm_r1_micro_step(
    res: int = 128, *, fast_bf16: bool = True, seed: int = 0, overrides: dict[str, Any] | None = None
) -> Run:
    """One TDM-R1 micro-step on the full SD3.5-Medium (see the module docstring).

    ``overrides``: transformer config changes (a reduced model runs the same path in seconds).
    """
    from tdm_r1.models.sd3 import SD3Adapter
    from tdm_r1.registry import MODELS
    from tdm_r1.train.methods.base import Batch
    from tdm_r1.train.methods.tdm_r1 import OLD, SUR
    from tdm_r1.train.rollout import Rollout

    run = Run("TDM-R1 micro-step (fake + surrogate + generator step, 3 AdamW updates)", "sd3.5-medium", res)
    real_size.reset_peak_rss()
    t0 = time.perf_counter()
    transformer = real_size.random_transformer("sd3.5-medium", seed=seed, overrides=overrides)
    sampling = MODELS.get("tdm-sd3.5-medium-4step").sampling.replace(height=res, width=res)
    adapter = SD3Adapter(transformer=transformer, vae=None, sampling=sampling, device="cpu", dtype="bfloat16")
    torch.manual_seed(seed)  # the LoRA initialisations draw from the global RNG, as in Trainer
    t = _trainer(adapter, res)
    run.parameters = sum(p.numel() for _, p in real_size.frozen_parameters(transformer))
    run.seconds["build"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    base = real_size.frozen_parameters(transformer)
    run.digests_before = {"base": real_size.module_digest(base)}
    run.digests_before |= {r: adapter.roles.digest(r) for r in adapter.roles}
    old_before = [p.detach().clone() for p in adapter.roles.parameters(OLD)]
    run.seconds["digests"] = time.perf_counter() - t0

    c, h, w = adapter.latent_shape(res, res)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, t.steps + 1, c, h, w, generator=g)
    index, group, adv = torch.arange(1), torch.zeros(1, dtype=torch.long), torch.tensor([1.0])
    ro = Rollout(index, group, [""], [{}], latents, adv.clone(), {})
    t.method.begin_epoch(ro, adv)
    batch = Batch(0, 0, slice(0, 1), index, group, latents, adv, sd3_conditioning(1))
    context = real_size.bf16_linears_in_fp32() if fast_bf16 else contextlib.nullcontext()
    with context:
        t0 = time.perf_counter()
        metrics = {"fake_loss": t.method.fake_step(batch, BOUNDARY)}
        metrics |= t.method.surrogate_step(batch, 0)
        metrics |= t.method.generator_step(batch, BOUNDARY)
        run.seconds["three_steps"] = time.perf_counter() - t0
        for role in adapter.roles:
            grads = [p.grad for p in adapter.roles.parameters(role) if p.grad is not None]
            finite = all(bool(x.isfinite().all()) for x in grads)
            run.grads[role] = (len(grads), sum(bool(x.abs().sum() > 0) for x in grads), finite)
        run.base_grads = sum(p.grad is not None for _, p in base)
        t0 = time.perf_counter()
        for role in t.opt:
            t._step(role)
        run.seconds["optimizer_steps"] = time.perf_counter() - t0
    run.metrics = {k: float(v) for k, v in metrics.items()}
    run.digests_after = {"base": real_size.module_digest(base)}
    run.digests_after |= {r: adapter.roles.digest(r) for r in adapter.roles}
    m = t.cfg.method
    decay = min(m.old_decay_max, m.old_decay_min + 0.001 * (t.updates[SUR] - 1))  # n = updates before
    expected = [
        o * decay + s.detach() * (1 - decay)
        for o, s in zip(old_before, adapter.roles.parameters(SUR), strict=True)
    ]
    run.copy_follows = all(
        torch.allclose(p, e, atol=1e-7) for p, e in zip(adapter.roles.parameters(OLD), expected, strict=True)
    )
    gen_names = adapter.roles.tensor_names("generator")
    run.output = {
        "roles": list(adapter.roles),
        "trainable": list(t.opt),
        "lora_tensors": {r: len(adapter.roles.parameters(r)) for r in adapter.roles},
        # module-name suffixes the generator wraps ("attn.to_q", ...): block prefix removed
        "targets": sorted({file_key(n, "generator").split(".lora_")[0].split(".", 2)[2] for n in gen_names}),
        "updates": dict(t.updates),
    }
    run.peak_gib = real_size.peak_rss_gib()
    run.note = "bf16 linears computed in fp32 (bf16_linears_in_fp32)" if fast_bf16 else "native bf16 matmuls"
    del t, adapter, transformer, base
    gc.collect()
    return run


def z_image_pass(
    res: int = 128, *, fast_bf16: bool = True, seed: int = 0, overrides: dict[str, Any] | None = None
) -> Run:
    """One 4-pass ``z-image-4step`` sampling pass on the full Z-Image transformer (forward only)."""
    from tdm_r1.models.sampling import sample
    from tdm_r1.models.z_image import ZImageAdapter
    from tdm_r1.registry import MODELS

    run = Run("4-step sampling pass (forward only, LoRA role generator)", "z-image", res)
    real_size.reset_peak_rss()
    t0 = time.perf_counter()
    preset = MODELS.get("z-image-4step")
    transformer = real_size.random_transformer("z-image", seed=seed, overrides=overrides)
    sampling = preset.sampling.replace(height=res, width=res)
    adapter = ZImageAdapter(
        transformer=transformer, vae=None, sampling=sampling, device="cpu", dtype="bfloat16"
    )
    adapter.roles.add(
        "generator", rank=preset.lora_rank, alpha=preset.lora_alpha, target_modules=preset.lora_targets
    )
    run.parameters = sum(p.numel() for _, p in real_size.frozen_parameters(transformer))
    run.seconds["build"] = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed + 1)
    embeds = torch.randn(1, Z_IMAGE_TOKENS, int(transformer.config.cap_feat_dim), generator=g)
    cond = Conditioning(
        embeds=embeds.to(torch.bfloat16), mask=torch.ones(1, Z_IMAGE_TOKENS, dtype=torch.bool)
    )
    noise = adapter.initial_noise([seed], res, res)
    schedule = adapter.schedule(height=res, width=res)
    context = real_size.bf16_linears_in_fp32() if fast_bf16 else contextlib.nullcontext()
    with context:
        t0 = time.perf_counter()
        traj = sample(adapter, cond, noise, schedule, role="generator", return_x0=False)
        run.seconds["sampling"] = time.perf_counter() - t0
    final = traj.final
    run.output = {
        "nfe": int(traj.nfe),
        "shape": list(final.shape),
        "finite": bool(final.isfinite().all()),
        "std": float(final.std()),
        "sigmas": [round(float(s), 4) for s in schedule.sigmas],
        "lora_tensors": len(adapter.roles.parameters("generator")),
    }
    run.peak_gib = real_size.peak_rss_gib()
    run.note = "bf16 linears computed in fp32 (bf16_linears_in_fp32)" if fast_bf16 else "native bf16 matmuls"
    del adapter, transformer
    gc.collect()
    return run


def write_record(runs: list[Run], path: str | Path, *, total_s: float | None = None) -> Path:
    """The markdown table of ``runs`` (and a JSON twin) at ``path``."""
    import json
    import platform

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Real architectures on the CPU: time and peak memory",
        "",
        f"Generated by `tests/models/test_real_arch_cpu.py` (`TDMBENCH_PERF_OUT={path.as_posix()} make test-slow`) on "
        f"{dt.date.today()}: {real_size.cpu_note()}; {platform.machine()}, torch {torch.__version__}.",
        "",
        "The full released transformer configurations with random bf16 weights (built on the meta device, "
        "then filled: `tdm_r1/testing/real_size.py`), 128 px (latents 16x16x16), micro-batch 1, no text "
        "encoders (random conditioning of the real shapes), no VAE. What each row runs: "
        "`tdm_r1/testing/real_size_runs.py`.",
        "",
        "| model | what | params (B) | build s | run s | peak RSS (GiB) | checks | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        build = r.seconds.get("build", 0.0)
        run_s = sum(v for k, v in r.seconds.items() if k not in ("build", "digests"))
        detail = ", ".join(f"{k} {v:.0f} s" for k, v in r.seconds.items() if k not in ("build",))
        checks = ", ".join(f"{k} {v:.4g}" for k, v in r.metrics.items() if k.endswith("loss")) or (
            f"nfe {r.output.get('nfe')}, finite {r.output.get('finite')}"
        )
        lines.append(
            f"| {r.model} | {r.what} | {r.parameters / 1e9:.2f} | {build:.0f} | {run_s:.0f} ({detail}) | "
            f"{r.peak_gib:.1f} | {checks} | {r.note} |"
        )
    lines += [
        "",
        "Peak RSS: the process's `VmHWM`, reset (`/proc/self/clear_refs`) at the start of each row, so "
        "each row's peak includes its own weights and nothing of the row before. Build: the meta-device "
        "construction, storage and random fill (and, for SD3.5-M, the trainer's roles and optimisers).",
        "",
        "`bf16_linears_in_fp32` (`tdm_r1/testing/real_size.py`): weights and activations stay bf16, each "
        "bf16 `nn.Linear` multiplies its bf16 operands in float32 and rounds the output to bf16 (what a "
        "bf16 GEMM computes). On a CPU without AVX512-BF16 / AMX, torch's native bf16 GEMM runs at "
        "~10 GFLOP/s against 25-75 in float32; one native-bf16 SD3.5-M forward at 128 px took 40 s on "
        "this machine, so the micro-step (~19 forward-equivalents) would take ~13 min natively.",
        "The machine was shared with other jobs (the load average above, on 2 cores); the runs used "
        "`OMP_NUM_THREADS=1` at `nice 15`, so the times are upper bounds for 2 free cores.",
    ]
    if total_s is not None:
        lines.append(f"Wall time of the whole slow test file: {total_s:.0f} s.")
    lines.append("")
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=2) + "\n")
    return path
