"""The ``tdmbench`` command line (typer).

Commands stay thin: parse, build a config, call a library function. Every heavy import happens
inside a command body, so ``tdmbench --help`` imports neither torch nor any reward backend.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tdm_r1 import __version__
from tdm_r1.errors import TdmError

app = typer.Typer(
    name="tdmbench",
    help="Benchmark, evaluate and RL-train (TDM-R1) few-step text-to-image models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
data_app = typer.Typer(help="Official benchmark prompt files (downloaded by sha256).", no_args_is_help=True)
weights_app = typer.Typer(help="Model weights each reward and model needs.", no_args_is_help=True)
toy_app = typer.Typer(help="The embedded toy world: rebuild its models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(weights_app, name="weights")
app.add_typer(toy_app, name="toy")

F = TypeVar("F", bound=Callable[..., Any])

# Shared options, defined once.
RewardOpt = Annotated[
    list[str],
    typer.Option("--reward", "-r", help="Reward name, optionally weighted: ocr, ocr=0.7 (repeatable)."),
]
RewardOptionOpt = Annotated[
    list[str],
    typer.Option(
        "--reward-option",
        help="Reward constructor option REWARD.KEY=VALUE, e.g. pickscore.model_path=/models/PickScore_v1.",
    ),
]
SetOpt = Annotated[list[str], typer.Option("--set", help="Config override KEY=VALUE with dotted keys.")]


def _check_device(value: str | None) -> str | None:
    """``--device``: a torch device string whose accelerator exists (checked before any work)."""
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise typer.BadParameter(f"{value!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise typer.BadParameter(f"{value!r}: no CUDA GPU is visible here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise typer.BadParameter(
                f"{value!r}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 ...)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise typer.BadParameter(f"{value!r}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise typer.BadParameter(f"{value!r}: tdmbench runs on cpu, cuda or mps")
    return value


DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="torch device (default: cuda if available).", callback=_check_device),
]

#: Set by ``tdmbench --debug``: user errors keep their traceback.
_DEBUG = {"on": False}


def friendly_errors(fn: F) -> F:
    """Turn every error a user can cause into one line (exit code 2) instead of a traceback.

    What counts as user-caused is decided in one place, :func:`tdm_r1.errors.user_error_message`
    (tdmbench's own errors, bad files, paths, YAML, images); ``--debug`` re-raises them. Other
    exceptions are bugs and keep their traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from tdm_r1.errors import user_error_message

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            message = None if _DEBUG["on"] else user_error_message(exc)
            if message is None:
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from exc

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tdmbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of errors (also user errors).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    import os

    _DEBUG["on"] = debug or os.environ.get("TDMBENCH_DEBUG", "") not in ("", "0")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def parse_reward_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["pickscore.model_path=/x"]`` -> ``{"pickscore": {"model_path": "/x"}}``.

    Reward names may contain dots (``hpsv2.1``): the longest registered name that prefixes the
    key wins.
    """
    from tdm_r1.config import parse_override
    from tdm_r1.errors import ConfigError
    from tdm_r1.registry import REWARDS

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(
                f"--reward-option {item!r} must look like REWARD.KEY=VALUE "
                "(e.g. pickscore.model_path=/models/PickScore_v1)"
            )
        key, value = parse_override(item)
        parts = key.split(".")
        reward, opt = parts[0], ".".join(parts[1:])
        for cut in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:cut]) in REWARDS:
                reward, opt = ".".join(parts[:cut]), ".".join(parts[cut:])
                break
        if not opt:
            raise ConfigError(f"--reward-option {item!r} must look like REWARD.KEY=VALUE")
        out.setdefault(reward, {})[opt] = value
    return out


# ---------------------------------------------------------------------------------------- ls
@app.command("ls")
@friendly_errors
def ls_cmd(
    kind: Annotated[str, typer.Argument(help="rewards | models | benchmarks | data | weights")],
) -> None:
    """List registered rewards, models, benchmarks, data files or weight files."""
    from tdm_r1 import listing

    typer.echo(listing.render(kind))


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
    from tdm_r1.paths import check_output_file
    from tdm_r1.scoring import score_folder, summarize

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
    from tdm_r1.generation import generate_to_dir, plan_jobs, read_prompts
    from tdm_r1.models.base import resolve_model
    from tdm_r1.paths import check_output_dir

    # Every input is checked before the model loads (seconds) and before --out is created.
    preset = resolve_model(model)
    plan_jobs(read_prompts(prompts), seed=seed, images_per_prompt=images_per_prompt)
    check_output_dir(out, "--out")
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
    from tdm_r1 import listing

    typer.echo(listing.render("data"))


# -------------------------------------------------------------------------------------- eval
@app.command("eval")
@friendly_errors
def eval_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Model preset (`tdmbench ls models`).")],
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
    results_dir: Annotated[
        Path | None, typer.Option("--results-dir", help="Default: $TDMBENCH_RESULTS or ./results.")
    ] = None,
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
        args = ["eval", "--model", model, "--batch-size", str(batch_size)]
        for b in benchmark or []:
            args += ["--benchmark", b]
        if limit is not None:
            args += ["--limit", str(limit)]
        if device is not None:
            args += ["--device", device]
        for item in reward_option or []:
            args += ["--reward-option", item]
        if results_dir is not None:
            args += ["--results-dir", str(results_dir)]
        for ref in plugin or []:
            args += ["--plugin", ref]
        if not progress:
            args.append("--no-progress")
        launch(num_processes, args)
        return
    load_plugins(plugin or [])
    from tdm_r1.eval.runner import evaluate

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


# ------------------------------------------------------------------------------- train / distill
def _train_common(
    *,
    command: str,
    config: str | None,
    overrides: list[str],
    flags: dict[str, Any],
    num_processes: int,
    cli_args: list[str],
    dry_run: bool = False,
) -> None:
    from tdm_r1.eval.launch import in_distributed_launch, launch
    from tdm_r1.train.config import check_world, load_train_config

    cfg = load_train_config(config, overrides=overrides, flags=flags)
    check_world(cfg, num_processes if not in_distributed_launch() else 1)
    if dry_run:
        from tdm_r1.train.config import dry_run as check_all

        typer.echo(check_all(cfg, num_processes))
        return
    if num_processes > 1 and not in_distributed_launch():
        launch(
            num_processes,
            [command, *cli_args],
            what="training run",
            resume_hint=f"Checkpoints are in {cfg.run_dir()}: rerun the same command to resume.",
        )
        return
    from tdm_r1.train.trainer import Trainer

    run = Trainer(cfg).fit()
    typer.echo(f"run folder: {run}")
    typer.echo(f"final model: {run / 'final' / 'preset.json'} (registered as {cfg.register_as or cfg.name})")


def _default_train_config(model: str | None, rewards: list[str]) -> str | None:
    """``presets/toy-<reward>.yaml`` for the toy world (the default model), else None."""
    from tdm_r1.rewards.base import parse_reward_specs
    from tdm_r1.train.config import PRESETS_DIR

    if model not in (None, "toy-4step"):
        return None
    names = list(parse_reward_specs(rewards)) if rewards else []
    if len(names) == 1 and (PRESETS_DIR / f"toy-{names[0]}.yaml").is_file():
        return f"toy-{names[0]}"
    return "toy-r1"


NumProcOpt = Annotated[
    int, typer.Option("--num-processes", min=1, help="Processes on this machine (accelerate / torchrun).")
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Resolve the config, check names and batch shapes, print the plan; load nothing."
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config: a file or a shipped preset (presets/NAME.yaml)."),
]


@app.command("train")
@friendly_errors
def train_cmd(
    reward: RewardOpt = None,  # type: ignore[assignment]
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Generator preset (default toy-4step).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,  # type: ignore[assignment]
    name: Annotated[str | None, typer.Option("--name", help="Run name (folder under ./runs).")] = None,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", min=0, help="Wall-clock budget.")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option("--max-epochs", min=1, help="Epoch budget.")] = None,
    device: DeviceOpt = None,
    num_processes: NumProcOpt = 1,
    dry_run: DryRunOpt = False,
) -> None:
    """TDM-R1: RL post-training of a few-step generator with any (non-differentiable) reward."""
    from tdm_r1.errors import ConfigError
    from tdm_r1.rewards.base import parse_reward_specs

    if not reward and not config:
        raise ConfigError(
            "give a reward (--reward ocr, --reward ocr=0.7 --reward pickscore=0.3) or a --config"
        )
    config = config or _default_train_config(model, reward or [])
    flags: dict[str, Any] = {
        "rewards": parse_reward_specs(reward) if reward else None,
        "model.name": model,
        "name": name,
        "max_minutes": max_minutes,
        "max_epochs": max_epochs,
        "model.device": device,
    }
    args = [f"--reward={r}" for r in reward or []]
    for opt, val in (("--model", model), ("--config", config), ("--name", name), ("--device", device)):
        if val is not None:
            args += [opt, str(val)]
    for opt, val in (("--max-minutes", max_minutes), ("--max-epochs", max_epochs)):
        if val is not None:
            args += [opt, str(val)]
    for item in set_ or []:
        args += ["--set", item]
    _train_common(
        command="train",
        config=config,
        overrides=set_ or [],
        flags=flags,
        num_processes=num_processes,
        cli_args=args,
        dry_run=dry_run,
    )


@app.command("distill")
@friendly_errors
def distill_cmd(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="Teacher preset (e.g. toy-teacher).")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Student sampling steps K.")] = 4,
    config: ConfigOpt = None,
    set_: SetOpt = None,  # type: ignore[assignment]
    name: Annotated[str | None, typer.Option("--name", help="Run name (folder under ./runs).")] = None,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", min=0, help="Wall-clock budget.")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option("--max-epochs", min=1, help="Epoch budget.")] = None,
    device: DeviceOpt = None,
    num_processes: NumProcOpt = 1,
    dry_run: DryRunOpt = False,
) -> None:
    """TDM distillation: a K-step student from a teacher (the TDM-R1 trainer with the reward off)."""
    flags: dict[str, Any] = {
        "rewards": {},
        "model.name": teacher,
        "model.steps": steps,
        "name": name,
        "max_minutes": max_minutes,
        "max_epochs": max_epochs,
        "model.device": device,
    }
    args = ["--teacher", teacher, "--steps", str(steps)]
    for opt, val in (("--config", config), ("--name", name), ("--device", device)):
        if val is not None:
            args += [opt, str(val)]
    for opt, val in (("--max-minutes", max_minutes), ("--max-epochs", max_epochs)):
        if val is not None:
            args += [opt, str(val)]
    for item in set_ or []:
        args += ["--set", item]
    _train_common(
        command="distill",
        config=config,
        overrides=set_ or [],
        flags=flags,
        num_processes=num_processes,
        cli_args=args,
        dry_run=dry_run,
    )


@app.command("demo")
@friendly_errors
def demo_cmd(
    reward: Annotated[
        str, typer.Option("--reward", "-r", help="ocr | geneval (the toy world's rewards).")
    ] = "ocr",
    minutes: Annotated[
        float | None,
        typer.Option(
            "--minutes", min=0, help="Training safety cap in minutes (the run is bounded by epochs)."
        ),
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """The main job on the embedded toy world: TDM-R1 training, evaluation, leaderboard (resumable)."""
    from tdm_r1.demo import run_demo

    out = run_demo(reward=reward, minutes=minutes, device=device)
    typer.echo(f"run: {out['run']}")
    for model, bench in out["reused"]:
        typer.echo(f"reused the committed result of {model} on {bench} (same weights, suite and rewards)")
    for path in out["files"].values():
        typer.echo(f"wrote {path}")
    typer.echo("time per stage: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in out["stages"].items()))


@app.command("leaderboard")
@friendly_errors
def leaderboard_cmd(
    results_dir: Annotated[
        Path | None, typer.Option("--results-dir", help="Default: $TDMBENCH_RESULTS or ./results.")
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Also write results/plots/*.png.")] = True,
) -> None:
    """results/*/*.csv + results/reference/published.csv -> results/leaderboard.{csv,md} (+ plots)."""
    from tdm_r1.eval import leaderboard
    from tdm_r1.paths import results_dir as default_results_dir

    root = results_dir or default_results_dir()
    lb = leaderboard.build(root)
    paths = leaderboard.write(lb, root)
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
    results_dir: Annotated[
        Path | None, typer.Option("--results-dir", help="Default: $TDMBENCH_RESULTS or ./results.")
    ] = None,
    prompts: Annotated[int, typer.Option("--prompts", min=1, help="Prompts per image grid.")] = 6,
) -> None:
    """Write results/report/index.html: leaderboard, figures and image grids (model x prompt)."""
    from tdm_r1.eval.report import write_report

    typer.echo(f"wrote {write_report(results_dir, n_prompts=prompts)}")


# ----------------------------------------------------------------------------------- weights
@weights_app.command("list")
@friendly_errors
def weights_list() -> None:
    """List the weight files of every reward and model: hub id, file, size, local status."""
    from tdm_r1 import listing

    typer.echo(listing.render("weights"))


@weights_app.command("download")
@friendly_errors
def weights_download(
    keys: Annotated[list[str], typer.Argument(help="Weight keys (see `weights list`).")],
) -> None:
    """Download weight files into the Hugging Face cache (needs internet access)."""
    from tdm_r1 import listing, weights

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
    from tdm_r1 import listing, weights

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


# --------------------------------------------------------------------------------------- toy
@toy_app.command("build")
@friendly_errors
def toy_build(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Build folder (checkpoints; rerun to resume).")
    ] = Path("runs/toy-build"),
    recipe: Annotated[str, typer.Option("--recipe", help="gpu | cpu (batch sizes and step counts).")] = "cpu",
    device: DeviceOpt = None,
    stage: Annotated[
        list[str] | None, typer.Option("--stage", help="ae | teacher | student (repeatable; default all).")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option("--minutes", min=0, help="Stop (resumably) after this many minutes.")
    ] = None,
    install: Annotated[
        bool, typer.Option("--install", help="Copy the finished models into the package (toy presets).")
    ] = False,
) -> None:
    """Rebuild the toy autoencoder, teacher and 4-step student from scratch (resumable)."""
    from tdm_r1.errors import ConfigError
    from tdm_r1.toyworld.build import RECIPES, build

    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    stages = tuple(stage or ("ae", "teacher", "student"))
    bad = [s for s in stages if s not in ("ae", "teacher", "student")]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad}; valid: ae, teacher, student")
    import torch

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = build(out, recipe=recipe, device=dev, stages=stages, minutes=minutes, install=install)
    for name, info in result["stages"].items():
        typer.echo(
            f"{name}: {'finished' if info['finished'] else 'paused (rerun to resume)'} in {info['seconds']} s"
        )


# ------------------------------------------------------------------------------------- label
@app.command("label")
@friendly_errors
def label_cmd(
    db: Annotated[
        Path | None, typer.Option("--db", help="Label database (SQLite; created when missing).")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Register this folder's images as groups first.")
    ] = None,
    run: Annotated[
        Path | None, typer.Option("--run", help="Training run folder (runs/NAME) whose likes to label.")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface (other than 127.0.0.1 needs --token).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8765,
    token: Annotated[
        str | None, typer.Option("--token", help="Access token remote raters must enter.")
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write all label rows to .csv / .parquet and exit.")
    ] = None,
    import_: Annotated[
        Path | None, typer.Option("--import", help="Add the label rows of an export and exit.")
    ] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Print counts (labels used...) and exit.")] = False,
) -> None:
    """Label images like / dislike in the browser (the `likes` reward's raters)."""
    from tdm_r1.label.command import label_command

    label_command(
        db=db, images=images, run=run, host=host, port=port, token=token,
        export=export, import_=import_, stats=stats, echo=typer.echo,
    )  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    app()
