"""``tdmbench arena``: RL methods compared on the toy world at an equal reward-evaluation budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tdm_r1.cli.app import app, debug_enabled, friendly_errors
from tdm_r1.cli.evaluation import ResultsDirOpt


@app.command("arena")
@friendly_errors
def arena_cmd(
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--methods",
            help="Methods to run (repeat; default: every registered method with a toy recipe, "
            "`tdmbench ls methods`).",
        ),
    ] = None,
    rewards: Annotated[
        list[str] | None, typer.Option("--rewards", help="Training rewards (repeat; default: geneval ocr).")
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            help="Start models (repeat; default toy-4step: every method at 4 NFE; toy-teacher adds the "
            "multi-step methods on the 100-NFE teacher, the longest cells).",
        ),
    ] = None,
    seeds: Annotated[
        list[int] | None,
        typer.Option("--seeds", help="Training seeds of every cell (repeat; default 0 1 2)."),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option("--jobs", min=1, help="Cells trained at once, each on cores/jobs threads (default 1)."),
    ] = 1,
    budget: Annotated[
        int | None,
        typer.Option("--budget", min=1, help="Reward evaluations per run (default 1024; a multiple of 64)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Evaluation batch size.")] = 32,
    results_dir: ResultsDirOpt = None,
    runs_dir: Annotated[
        Path | None, typer.Option("--runs-dir", help="Training runs (default: $TDMBENCH_RUNS/arena).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cells, their presets and epochs; train nothing.")
    ] = False,
) -> None:
    """Train each (method x start model x reward x seed) cell for the same number of reward
    evaluations, evaluate it at a quarter, half and all of the budget against its start model
    (paired, seen and unseen prompts), pool the seeds (95% CIs over seeds, head-to-head pairs) and
    write results/arena/. Resumable: a cell already in results/arena with the same config is
    skipped; an interrupted one resumes."""
    from tdm_r1.apps.arena.grid import DEFAULT_BUDGET, cell_config, checkpoint_epochs, select_cells
    from tdm_r1.apps.arena.run import ArenaPaths, run_grid
    from tdm_r1.paths import results_dir as default_results
    from tdm_r1.paths import runs_dir as default_runs

    budget = budget or DEFAULT_BUDGET
    paths = ArenaPaths(results=results_dir or default_results(), runs=runs_dir or default_runs() / "arena")
    cells = select_cells(methods, rewards, models, seeds)
    configs = [cell_config(c, budget, paths.runs) for c in cells]  # every name and budget checked first
    if dry_run:
        for cell, cfg in zip(cells, configs, strict=True):
            typer.echo(
                f"{cell.reward}: {cell.label} seed {cell.seed}: preset {cell.preset}, {cfg.max_epochs} epochs x "
                f"{cfg.samples_per_epoch} = {budget} reward evaluations, checkpoints at epochs "
                f"{', '.join(map(str, checkpoint_epochs(cfg.max_epochs)))}, run {cfg.run_dir()}"
            )
        return
    from tdm_r1.apps.arena.outputs import write_outputs

    tables = run_grid(
        cells, budget, paths, jobs=jobs, batch_size=batch_size, debug=debug_enabled(), echo=typer.echo
    )
    for path in write_outputs(tables, paths):
        typer.echo(f"wrote {path}")
    failed = sum(int((t["status"] != "ok").sum()) for t in tables.values())
    if failed:
        typer.secho(f"{failed} cell(s) failed: see the error column of results/arena/<reward>.csv", err=True)
