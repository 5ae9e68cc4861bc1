"""``tdmbench eval``, ``leaderboard`` and ``report``: benchmark runs and the tables built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tdm_r1.cli.app import DeviceOpt, RewardOptionOpt, app, friendly_errors, parse_reward_options

# -------------------------------------------------------------------------------------- eval
ResultsDirOpt = Annotated[
    Path | None, typer.Option("--results-dir", help="Default: $TDMBENCH_RESULTS or ./results.")
]


@app.command("eval")
@friendly_errors
def eval_cmd(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Model preset (`tdmbench ls models`), run folder (runs/NAME/final) or preset.json.",
        ),
    ],
    benchmark: Annotated[
        list[str] | None,
        typer.Option("--benchmark", "-b", help="Benchmark (repeatable; default: the model's suites)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Keep the first N prompts of each benchmark.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per generate / reward call.")
    ] = 8,
    num_processes: Annotated[
        int,
        typer.Option(
            "--num-processes", min=1, help="Processes on this machine (each takes a share of the prompts)."
        ),
    ] = 1,
    device: DeviceOpt = None,
    reward_option: RewardOptionOpt = None,  # type: ignore[assignment]
    results_dir: ResultsDirOpt = None,
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="Module or module:function that registers your own models/rewards."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = True,
) -> None:
    """Generate, score and summarise: results/<benchmark>/<model>.csv (cached and resumable)."""
    from tdm_r1.errors import ConfigError
    from tdm_r1.eval.launch import in_distributed_launch, launch
    from tdm_r1.plugins import load_plugins

    if num_processes > 1 and not in_distributed_launch():
        if device is None or device.startswith("cuda"):
            import torch

            gpus = torch.cuda.device_count()
            if gpus and num_processes > gpus:
                raise ConfigError(
                    f"--num-processes {num_processes} needs one GPU per process, but {gpus} GPU(s) are "
                    "visible: use at most that many processes, or --device cpu for CPU processes"
                )
        from tdm_r1.cli.relaunch import context_argv

        # every option the user gave, as the command declares it: one-process semantics in each child
        launch(num_processes, context_argv(ctx, drop={"num_processes"}))
        return
    load_plugins(plugin or [])
    from tdm_r1.eval.runner import EvalInterrupted, evaluate

    try:
        results = evaluate(
            model,
            benchmark or None,
            limit=limit,
            batch_size=batch_size,
            device=device,
            reward_options=parse_reward_options(reward_option or []),
            results_root=results_dir,
            progress=progress,
        )
    except EvalInterrupted as exc:
        typer.secho(exc.message(), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None
    for res in results:
        cols = ["metric", "mean", "ci_low", "ci_high", "n", "reward_version"]
        typer.echo(f"\n{res.model} on {res.benchmark} ({res.files.csv if res.files else 'not written'})")
        typer.echo(res.summary[cols].to_markdown(index=False, floatfmt=".4f"))
    if results:
        s = results[0].stats
        typer.echo(
            f"\n{s.images_generated} images generated, {s.image_hits} from cache; "
            f"{s.scores_computed} scores computed, {s.score_hits} from cache"
        )


@app.command("leaderboard")
@friendly_errors
def leaderboard_cmd(
    results_dir: ResultsDirOpt = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Also write results/plots/*.png.")] = True,
    skip_broken: Annotated[
        bool,
        typer.Option(
            "--skip-broken",
            help="Leave out results files that cannot be read whole (warned and listed in the leaderboard) "
            "instead of stopping.",
        ),
    ] = False,
) -> None:
    """results/*/*.csv + results/reference/published.csv -> results/leaderboard.{csv,md} (+ plots)."""
    from tdm_r1.eval import leaderboard, leaderboard_md
    from tdm_r1.paths import results_dir as default_results_dir

    root = results_dir or default_results_dir()
    lb = leaderboard.build(root, skip_broken=skip_broken)
    for why in lb.skipped:
        typer.secho(f"warning: left out {why}", fg=typer.colors.YELLOW, err=True)
    paths = leaderboard_md.write(lb, root)
    if plots:
        from tdm_r1.eval.plots import write_all

        figures = write_all(lb, root / "plots")
        typer.echo(f"{len(figures)} figures in {root / 'plots'}")
    typer.echo(f"{len(lb.measured())} measured and {len(lb.reported())} reported entries")
    for path in paths.values():
        typer.echo(f"wrote {path}")


@app.command("report")
@friendly_errors
def report_cmd(
    results_dir: ResultsDirOpt = None,
    prompts: Annotated[int, typer.Option("--prompts", min=1, help="Prompts per image grid.")] = 6,
) -> None:
    """Write results/report/index.html: leaderboard, figures and image grids (model x prompt)."""
    from tdm_r1.eval.report import write_report

    typer.echo(f"wrote {write_report(results_dir, n_prompts=prompts)}")
