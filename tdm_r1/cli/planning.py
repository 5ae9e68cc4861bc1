"""``tdmbench plan``: predicted peak GPU memory, FLOPs and time per step, without a GPU (docs/planning.md)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tdm_r1.cli.app import app, friendly_errors
from tdm_r1.errors import ConfigError


@app.command("plan")
@friendly_errors
def plan_cmd(
    model: Annotated[str, typer.Option("--model", help="sd3.5-medium | z-image")] = "sd3.5-medium",
    workload: Annotated[str, typer.Option("--workload", help="lora-step | forward")] = "lora-step",
    resolution: Annotated[int, typer.Option("--resolution", help="Image side in pixels.")] = 512,
    batch: Annotated[int, typer.Option("--batch", help="Batch (micro-batch) per GPU.")] = 1,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank (alpha = 2 x rank).")] = 32,
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", help="Checkpoint blocks.")
    ] = False,
    nfe: Annotated[int, typer.Option("--nfe", help="forward: transformer calls per step.")] = 1,
    text_tokens: Annotated[
        int | None, typer.Option("--text-tokens", help="Default: the encoders' count.")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="A training recipe (preset name or YAML): its micro-step.")
    ] = None,
    num_processes: Annotated[
        int, typer.Option("--num-processes", help="--config: processes the global micro-batch splits over.")
    ] = 1,
    gpu: Annotated[str, typer.Option("--gpu", help="h100 | h200 | a100 | l40s | rtx4090")] = "h100",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Trace one step of the real architecture on the meta device and predict memory, FLOPs and time."""
    from tdm_r1.planning import plan as P
    from tdm_r1.planning.gpus import gpu as gpu_spec
    from tdm_r1.planning.workloads import model_shape

    card = gpu_spec(gpu)
    if config is not None:
        from tdm_r1.planning.recipe import load_micro_step

        ms = load_micro_step(config, num_processes)
        knobs = P.Knobs(ms.micro_batch, ms.grad_checkpointing, ms.offload_text_encoders)

        def estimate(k: P.Knobs) -> P.Estimate:
            return P.estimate_recipe(ms, k)

        title = (
            f"{ms.recipe}: {ms.method} micro-step, {ms.shape.name} {ms.resolution}px, micro-batch {ms.micro_batch}"
            f"/process, roles {'+'.join(ms.trainable_roles)} (+ frozen {', '.join(ms.frozen_roles) or 'none'})"
        )
        training = True
    else:
        if workload not in ("lora-step", "forward"):
            raise ConfigError(f"--workload must be lora-step or forward, got {workload!r}")
        shape = model_shape(model)
        training = workload == "lora-step"
        knobs = P.Knobs(batch, grad_checkpointing and training)

        def estimate(k: P.Knobs) -> P.Estimate:
            if training:
                return P.estimate_lora_step(shape, resolution, lora_rank, k, text_tokens)
            return P.estimate_forward(shape, resolution, k, nfe, text_tokens)

        extra = (
            f", LoRA r{lora_rank}" + (", grad checkpointing" if knobs.grad_checkpointing else "")
            if training
            else ""
        )
        title = f"{workload} {model} {resolution}px batch {batch}{extra}"
    est = estimate(knobs)
    suggestion = None if est.fits(card) else P.suggest(estimate, knobs, card, training=training)
    report = P.report(est, card, title, suggestion)
    typer.echo(json.dumps(report) if as_json else P.render(report))
