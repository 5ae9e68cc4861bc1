"""``tdmbench ls``, ``data`` and ``weights``: what is registered, and the files it needs."""

from __future__ import annotations

from typing import Annotated

import typer

from tdm_r1.cli.app import app, data_app, friendly_errors, weights_app
from tdm_r1.errors import TdmError


# ---------------------------------------------------------------------------------------- ls
@app.command("ls")
@friendly_errors
def ls_cmd(
    kind: Annotated[
        str, typer.Argument(help="rewards | models | benchmarks | methods | recipes | data | weights")
    ],
) -> None:
    """List registered rewards, models, benchmarks, training methods, shipped training recipes, data files or weight files."""
    from tdm_r1.apps import listing

    typer.echo(listing.render(kind))


# -------------------------------------------------------------------------------------- data
@data_app.command("fetch")
@friendly_errors
def data_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Data file names (default: all).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if present.")] = False,
) -> None:
    """Download official prompt files into the data dir ($TDMBENCH_DATA_DIR) and check sha256."""
    from tdm_r1 import data

    for name in names or list(data.DATA_FILES):
        path = data.fetch(name, force=force)
        typer.echo(f"{name}: {path}")


@data_app.command("list")
@friendly_errors
def data_list() -> None:
    """Show each data file, its sha256 and whether it is present."""
    from tdm_r1.apps import listing

    typer.echo(listing.render("data"))


# ----------------------------------------------------------------------------------- weights
@weights_app.command("list")
@friendly_errors
def weights_list() -> None:
    """List the weight files of every reward and model: hub id, file, size, local status."""
    from tdm_r1.apps import listing

    typer.echo(listing.render("weights"))


@weights_app.command("download")
@friendly_errors
def weights_download(
    keys: Annotated[list[str], typer.Argument(help="Weight keys (see `weights list`).")],
) -> None:
    """Download weight files into the Hugging Face cache (needs internet access)."""
    from tdm_r1 import weights
    from tdm_r1.apps import listing

    listing.load_all_manifests()
    for key in keys:
        if key not in weights.MANIFEST:
            raise TdmError(f"unknown weight key {key!r}; see `tdmbench weights list`")
        typer.echo(f"{key}: {weights.download(weights.MANIFEST[key])}")


@weights_app.command("verify")
@friendly_errors
def weights_verify(
    keys: Annotated[list[str] | None, typer.Argument(help="Weight keys (default: all).")] = None,
) -> None:
    """Check the weight files on disk against their published sha256; exit 1 on any mismatch."""
    from tdm_r1 import weights
    from tdm_r1.apps import listing

    listing.load_all_manifests()
    unknown = [k for k in keys or [] if k not in weights.MANIFEST]
    if unknown:
        raise TdmError(f"unknown weight key(s) {unknown}; see `tdmbench weights list`")
    bad = 0
    for key in keys or sorted(weights.MANIFEST):
        state, text = weights.verify(weights.MANIFEST[key])
        bad += state == "mismatch"
        typer.echo(f"{key}: {state.upper() if state == 'mismatch' else state}: {text}")
    if bad:
        raise typer.Exit(1)
