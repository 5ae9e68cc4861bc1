"""``tdmbench train``, ``distill``, ``demo``, ``toy build`` and ``label``: training runs and their inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tdm_r1.cli.app import DeviceOpt, RewardOpt, SetOpt, app, friendly_errors, toy_app
from tdm_r1.errors import TdmError

# ------------------------------------------------------------------------------- train / distill
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
    typer.Option(
        "--config",
        "-c",
        help="Training recipe: a YAML file or a shipped recipe (recipes/NAME.yaml, `tdmbench ls recipes`).",
    ),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Run name (folder under ./runs).")]
MaxMinutesOpt = Annotated[float | None, typer.Option("--max-minutes", min=0, help="Wall-clock budget.")]
MaxEpochsOpt = Annotated[int | None, typer.Option("--max-epochs", min=1, help="Epoch budget.")]
LabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        help="Offline likes: train the likes reward on a label database collected earlier on the "
        "model's own samples (tdmbench label, or a run's likes.sqlite).",
    ),
]


def run_training(
    ctx: typer.Context,
    config: str | None,
    overrides: list[str],
    flags: dict[str, Any],
    *,
    num_processes: int = 1,
    dry_run: bool = False,
) -> None:
    """Resolve the config (defaults < ``config`` < ``--set`` < flags) and train, here or in
    ``num_processes`` processes.

    A multi-process run first writes the resolved config to ``<run>/config.yaml`` (after the
    resume check against the one there); every process then reads that file and nothing else
    (``tdmbench train --config <run>/config.yaml``), the same file a later resume compares with.
    """
    from tdm_r1.eval.launch import in_distributed_launch, launch
    from tdm_r1.train.config import check_world, load_train_config

    cfg = load_train_config(config, overrides=overrides, flags=flags)
    inside = in_distributed_launch()
    check_world(cfg, 1 if inside else num_processes)
    _note_negative_weights(cfg.rewards)
    if dry_run or (num_processes > 1 and not inside):
        from tdm_r1.train.preflight import dry_run as preflight

        summary = preflight(cfg, num_processes)  # once, in this process: before any child or run folder
        if dry_run:
            typer.echo(summary)
            return
    if num_processes > 1 and not inside:
        from tdm_r1.cli.relaunch import global_argv
        from tdm_r1.train import checkpoint
        from tdm_r1.train.resume import write_run_config

        had_checkpoint = checkpoint.complete(cfg.run_dir() / "checkpoints")
        path = write_run_config(cfg)
        try:
            launch(
                num_processes,
                [*global_argv(ctx), "train", "--config", str(path)],
                what="training run",
                resume_hint="",
            )
        except TdmError as exc:
            if checkpoint.complete(cfg.run_dir() / "checkpoints"):
                raise TdmError(
                    f"{exc} Checkpoints are in {cfg.run_dir()}: rerun the same command, or "
                    f"`tdmbench train --config {path} --num-processes {num_processes}`, to resume."
                ) from exc
            if not had_checkpoint:
                _forget_empty_run(cfg.run_dir())
            raise TdmError(f"{exc} Nothing was trained (no checkpoint was written).") from exc
        return
    from tdm_r1.train.trainer import Trainer

    run = Trainer(cfg).fit()
    typer.echo(f"run folder: {run}")
    name = cfg.register_as or cfg.name
    typer.echo(
        f"final model: {run / 'final' / 'preset.json'} ({name}: tdmbench eval --model {run / 'final'})"
    )


def _forget_empty_run(run_dir: Path) -> None:
    """Remove a run folder a failed launch created and left with nothing but its config."""
    leftovers = (
        [p for p in run_dir.rglob("*") if p.is_file() and p.name != "config.yaml"]
        if run_dir.is_dir()
        else [1]
    )
    if not leftovers:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


def _note_negative_weights(rewards: dict[str, float]) -> None:
    """Say what a negative reward weight does (accepted: penalising a reward is a real use)."""
    for name, weight in rewards.items():
        if weight < 0:
            typer.secho(
                f"note: reward {name} has weight {weight:g}: a negative weight makes training minimise "
                f"it (push its score down); use {name}={-weight:g} to maximise it",
                fg=typer.colors.YELLOW,
                err=True,
            )


def _run_flags(
    name: str | None, max_minutes: float | None, max_epochs: int | None, device: str | None
) -> dict:
    """The config keys of the options ``train`` and ``distill`` share (None = not given)."""
    return {"name": name, "max_minutes": max_minutes, "max_epochs": max_epochs, "model.device": device}


def _default_train_config(model: str | None, rewards: list[str], method: str = "tdm-r1") -> str | None:
    """The recipe a toy run starts from when no ``--config`` is given, else None.

    With one reward: the method's toy recipe for the start model (its registry entry's
    ``toy_recipes``, e.g. ``toy-dgpo-4step-{reward}``) when that recipe exists; on ``toy-4step``
    otherwise ``toy-r1`` (TDM-R1's toy recipe; ``--method`` still sets the method).
    """
    from tdm_r1.registry import METHODS
    from tdm_r1.rewards.base import parse_reward_specs
    from tdm_r1.train.config import RECIPES_DIR

    start = model or "toy-4step"
    names = list(parse_reward_specs(rewards)) if rewards else []
    for m in dict.fromkeys([method, "tdm-r1"]):
        recipe = (METHODS.meta(m).get("toy_recipes") or {}).get(start) if m in METHODS else None
        if recipe and len(names) == 1:
            name = recipe.format(reward=names[0])
            if (RECIPES_DIR / f"{name}.yaml").is_file() or Path(name).is_file():
                return name
    return "toy-r1" if start == "toy-4step" else None


def _method_name(method: str | None) -> str | None:
    """``--method`` as its registered name (None = not given); an unknown one is the registry's error."""
    if method is None:
        return None
    from tdm_r1.registry import METHODS

    return METHODS.canonical(method)


def _own_run_name(config: str, method: str, name: str | None) -> dict[str, Any]:
    """Flags that give a run of ``method`` on a config written for another method its own run folder
    and registered model (``<config>-<method>``, or ``--name``), so that it neither resumes nor
    overwrites that method's run."""
    from tdm_r1.train.config import load_recipe_tree, resolve_config_path

    tree = load_recipe_tree(config)
    if (tree.get("method") or {}).get("name", "tdm-r1") == method:
        return {}
    own = name or f"{resolve_config_path(config).stem}-{method}"
    return {"name": own, "register_as": own if tree.get("register_as") else None}


@app.command("train")
@friendly_errors
def train_cmd(
    ctx: typer.Context,
    reward: RewardOpt = None,  # type: ignore[assignment]
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Generator preset (default toy-4step).")
    ] = None,
    config: ConfigOpt = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="Training method (default tdm-r1, or the config's): any of `tdmbench ls methods`, a "
            "plug-in's too (`tdmbench --plugin MODULE train ...`).",
        ),
    ] = None,
    set_: SetOpt = None,  # type: ignore[assignment]
    name: NameOpt = None,
    max_minutes: MaxMinutesOpt = None,
    max_epochs: MaxEpochsOpt = None,
    device: DeviceOpt = None,
    num_processes: NumProcOpt = 1,
    dry_run: DryRunOpt = False,
    labels: LabelsOpt = None,
) -> None:
    """RL post-training with any (non-differentiable) reward: TDM-R1 on a few-step generator, or --method."""
    from tdm_r1.errors import ConfigError
    from tdm_r1.rewards.base import parse_reward_specs

    if labels is not None:
        reward, label_sets = _offline_likes(reward, labels)
        set_ = [*(set_ or []), *label_sets]
    if not reward and not config:
        raise ConfigError(
            "give a reward (--reward ocr, --reward ocr=0.7 --reward pickscore=0.3) or a --config"
        )
    method = _method_name(method)
    flags = {
        "rewards": parse_reward_specs(reward) if reward else None,
        "model.name": model,
        "method.name": method,
        **_run_flags(name, max_minutes, max_epochs, device),
    }
    if not config:
        config = _default_train_config(model, reward or [], method or "tdm-r1")
        if config:
            shown = config if Path(config).is_file() else f"recipes/{config}.yaml"
            typer.echo(f"config: {shown} (the default for this model, method and reward)")
    if config and method:
        flags.update(_own_run_name(config, method, name))
    run_training(ctx, config, set_ or [], flags, num_processes=num_processes, dry_run=dry_run)


def _offline_likes(reward: list[str] | None, labels: Path) -> tuple[list[str], list[str]]:
    """``--labels FILE``: the rewards (``likes`` when none is given) and the ``--set`` overrides that
    point the likes reward at FILE, read-only, instead of an online database."""
    from tdm_r1.errors import ConfigError
    from tdm_r1.registry import REWARDS
    from tdm_r1.rewards.base import parse_reward_specs

    if not labels.is_file():
        raise ConfigError(
            f"--labels {labels}: no such file; give a label database (tdmbench label --db FILE, or a "
            "training run's runs/NAME/likes.sqlite)"
        )
    reward = list(reward or ["likes"])
    keys = [k for k in parse_reward_specs(reward) if REWARDS.canonical(k) == "likes"]
    if not keys:
        raise ConfigError(
            f"--labels feeds the likes reward, which is not among --reward {' '.join(reward)}: "
            "add --reward likes (with a weight to mix it with the others)"
        )
    key = keys[0]
    return reward, [f"reward_options.{key}.labels={labels}", f"reward_options.{key}.db=null"]


@app.command("distill")
@friendly_errors
def distill_cmd(
    ctx: typer.Context,
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="Teacher preset (e.g. toy-teacher).")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Student sampling steps K.")] = 4,
    config: ConfigOpt = None,
    set_: SetOpt = None,  # type: ignore[assignment]
    name: NameOpt = None,
    max_minutes: MaxMinutesOpt = None,
    max_epochs: MaxEpochsOpt = None,
    device: DeviceOpt = None,
    num_processes: NumProcOpt = 1,
    dry_run: DryRunOpt = False,
) -> None:
    """TDM distillation: a K-step student from a teacher (the TDM-R1 trainer with the reward off)."""
    flags = {
        "rewards": {},
        "model.name": teacher,
        "model.steps": steps,
        **_run_flags(name, max_minutes, max_epochs, device),
    }
    run_training(ctx, config, set_ or [], flags, num_processes=num_processes, dry_run=dry_run)


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
    from tdm_r1.apps.demo import run_demo

    out = run_demo(reward=reward, minutes=minutes, device=device)
    typer.echo(f"run: {out['run']}")
    for model, bench in out["reused"]:
        typer.echo(f"reused the committed result of {model} on {bench} (same weights, suite and rewards)")
    for path in out["files"].values():
        typer.echo(f"wrote {path}")
    typer.echo("what the run changed (new model - toy-4step, same prompts and seeds, paired 95% CI):")
    for d in out["deltas"]:
        typer.echo(
            f"  {d['domain']:<13} {d['suite']}/{d['metric']}: {d['delta']:+.3f} "
            f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (n={d['n']}): {d['verdict']}"
        )
    typer.echo("time per stage: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in out["stages"].items()))


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
    from tdm_r1.apps.toybuild.build import RECIPES, build
    from tdm_r1.errors import ConfigError

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
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Another host name raters open the app by (repeatable; --host and localhost always).",
        ),
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
    from tdm_r1.cli.label import label_command

    label_command(
        db=db, images=images, run=run, host=host, port=port, token=token,
        export=export, import_=import_, stats=stats, echo=typer.echo, allowed_host=allowed_host or [],
    )  # fmt: skip
