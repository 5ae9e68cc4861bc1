"""``tdmbench score`` and ``generate``: images in a folder, without the benchmark runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tdm_r1.cli.app import DeviceOpt, RewardOpt, RewardOptionOpt, app, friendly_errors, parse_reward_options


# ------------------------------------------------------------------------------------- score
@app.command("score")
@friendly_errors
def score_cmd(
    images: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    reward: RewardOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output CSV: one row per image.")],
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata", "-m", help="JSONL with file, prompt and reward fields (GenEval tag/include/...)."
        ),
    ] = None,
    reward_option: RewardOptionOpt = [],  # noqa: B006 (typer needs a literal default)
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per reward call.")] = 8,
    device: DeviceOpt = None,
    allow_missing_metadata: Annotated[
        bool,
        typer.Option("--allow-missing-metadata", help='Score images without a metadata row with prompt "".'),
    ] = False,
) -> None:
    """Score a folder of existing images with one or more rewards (no model needed).

    Each scored image is appended to ``<out>.partial.jsonl`` at once; an interrupted run, rerun
    with the same arguments, scores only the rest.
    """
    import torch

    from tdm_r1.eval.cache import atomic_write_text
    from tdm_r1.eval.scoring import score_folder, summarize
    from tdm_r1.paths import check_output_file

    out = check_output_file(out, "--out")
    progress_file = out.with_name(out.name + ".partial.jsonl")
    df = score_folder(
        images,
        reward,
        metadata=metadata,
        reward_options=parse_reward_options(reward_option),
        batch_size=batch_size,
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
        allow_missing_metadata=allow_missing_metadata,
        checkpoint=progress_file,
    )
    atomic_write_text(out, df.to_csv(index=False))
    progress_file.unlink(missing_ok=True)
    typer.echo(summarize(df))
    typer.echo(f"wrote {out}")
    from tdm_r1.eval import geneval_official as official

    if official.has_geneval_columns(df):  # also the official GenEval results format
        path = out.with_name(out.stem + ".geneval_results.jsonl")
        records = official.records_from_score_table(df, images, metadata)
        typer.echo(f"wrote {official.write_results_jsonl(path, records)} (GenEval summary_scores.py format)")


# ---------------------------------------------------------------------------------- generate
@app.command("generate")
@friendly_errors
def generate_cmd(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model preset name, run folder or pipeline folder.")
    ],
    prompts: Annotated[
        str, typer.Option("--prompts", "-p", help=".txt (one per line) or .jsonl (field 'prompt').")
    ],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Output folder (PNGs + metadata.jsonl; resumable).")
    ],
    seed: Annotated[
        int, typer.Option("--seed", help="Base seed; image j of prompt i uses derive_seed(seed, i, j).")
    ] = 0,
    images_per_prompt: Annotated[
        int, typer.Option("--images-per-prompt", "-n", min=1, help="Images per prompt.")
    ] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")] = 8,
    height: Annotated[
        int | None, typer.Option("--height", min=8, help="Image height (default: the model's).")
    ] = None,
    width: Annotated[
        int | None, typer.Option("--width", min=8, help="Image width (default: the model's).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Sampling steps (default: the model's).")
    ] = None,
    guidance: Annotated[
        float | None, typer.Option("--guidance", help="CFG scale, 1 = off (default: the model's).")
    ] = None,
    device: DeviceOpt = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="bfloat16 | float16 | float32.")] = None,
    model_path: Annotated[
        str | None, typer.Option("--model-path", help="Local copy of the model's diffusers pipeline folder.")
    ] = None,
    lora_path: Annotated[
        str | None, typer.Option("--lora-path", help="Local copy of the model's LoRA file.")
    ] = None,
    offload_text_encoders: Annotated[
        bool, typer.Option("--offload-text-encoders", help="Keep text encoders on the CPU between encodings.")
    ] = False,
) -> None:
    """Generate images for a prompts file (seeded per prompt and image; PNG + metadata.jsonl)."""
    from tdm_r1.apps.generation import generate_to_dir, plan_jobs, read_prompts
    from tdm_r1.models.preset import resolve_model
    from tdm_r1.paths import check_output_dir
    from tdm_r1.weights_check import check_lora_source

    # Every input is checked before the model loads (seconds) and before --out is created.
    preset = resolve_model(model)
    plan_jobs(read_prompts(prompts), seed=seed, images_per_prompt=images_per_prompt)
    check_output_dir(out, "--out")
    check_lora_source(lora_path if lora_path is not None else preset.lora)
    load_kw: dict[str, Any] = {"model_path": model_path, "lora_path": lora_path}
    if offload_text_encoders:
        load_kw["offload_text_encoders"] = True
    adapter = preset.load(device=device, dtype=dtype, **load_kw)
    meta = generate_to_dir(
        adapter,
        prompts,
        out,
        model_name=preset.name,
        seed=seed,
        images_per_prompt=images_per_prompt,
        batch_size=batch_size,
        steps=steps,
        guidance=guidance,
        height=height,
        width=width,
    )
    typer.echo(f"wrote {meta}")
