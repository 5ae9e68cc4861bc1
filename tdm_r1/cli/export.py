"""``tdmbench export``: a trained LoRA in the layouts diffusers, ComfyUI and peft load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tdm_r1.cli.app import app, friendly_errors


@app.command("export")
@friendly_errors
def export_cmd(
    folder: Annotated[
        Path, typer.Argument(help="A run folder, its final/ (or exports/epoch-N/) folder, or a saved role.")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="diffusers (one .safetensors file) or peft (a folder).")
    ] = "diffusers",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file (diffusers) or folder (peft).")
    ] = Path("lora.safetensors"),
) -> None:
    """Write a run's EMA generator LoRA for diffusers' ``load_lora_weights`` (and ComfyUI) or for peft."""
    from tdm_r1.models.lora_export import export_lora

    path = export_lora(folder, fmt, out)
    typer.echo(f"wrote {path} ({fmt})")
    if fmt == "diffusers":
        typer.echo(
            f"load it with: pipe.load_lora_weights({str(path)!r})  (or copy it to ComfyUI/models/loras/)"
        )
    else:
        typer.echo(f"load it with: peft.PeftModel.from_pretrained(pipe.transformer, {str(path)!r})")
