"""What a training run checks before it loads a model or starts a process: ``train --dry-run``,
and the launching process of ``train --num-processes N`` (once, not once per process, and before
the run folder is created), so that a missing prompts file or reward weight is one line that says
what provides it, never N tracebacks and an empty run folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tdm_r1.errors import ConfigError
from tdm_r1.train.config import check_world

if TYPE_CHECKING:
    from tdm_r1.train.config import TrainConfig


def check_prompts(cfg: TrainConfig) -> None:
    """A prompts file (``data.source: file``) exists and is readable; the error names the command
    that provides it where tdmbench ships one (``tdmbench data fetch NAME``)."""
    if cfg.data.source != "file":
        return
    path = Path(str(cfg.data.path)).expanduser()
    if path.is_file():
        if not os.access(path, os.R_OK):
            raise ConfigError(f"prompts file {path} (data.path) is not readable: check its permissions")
        return
    from tdm_r1 import data

    known = [f for f in data.DATA_FILES.values() if path.as_posix().endswith(f.relpath)]
    if known:
        hint = f"`tdmbench data fetch {known[0].name}` downloads it (then data.path=$TDMBENCH_DATA_DIR/{known[0].relpath})"
    else:
        shipped = ", ".join(f"{f.name} ({f.relpath})" for f in data.DATA_FILES.values())
        hint = (
            "it is not one tdmbench downloads (the Flow-GRPO / GenEval train splits are not redistributed): "
            f"point data.path at your copy (--set data.path=FILE); `tdmbench data fetch NAME` gets the test "
            f"prompt files {shipped}"
        )
    raise ConfigError(f"prompts file {path} (data.path) does not exist: {hint}")


def check_run_folder(run_dir: Path) -> None:
    """The run folder can be created and written (its nearest existing parent is writable)."""
    probe = Path(run_dir).resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"run folder {run_dir}: {probe} is not a writable folder; give output_dir=DIR (or $TDMBENCH_RUNS)"
        )


def check_reward_files(cfg: TrainConfig) -> None:
    """Every weight file of every reward resolves (local option, env var, HF cache or a download),
    else :class:`~tdm_r1.errors.MissingWeightsError` naming how to provide it."""
    from tdm_r1.eval.reward_jobs import RewardJob, check_reward_weights
    from tdm_r1.registry import REWARDS

    jobs = []
    for name in cfg.rewards:
        canonical = REWARDS.canonical(name)
        options = dict(cfg.reward_options.get(name) or cfg.reward_options.get(canonical) or {})
        jobs.append(RewardJob(canonical, REWARDS.get(canonical), options, False))
    check_reward_weights(jobs)


def dry_run(cfg: TrainConfig, world_size: int) -> str:
    """Everything a run checks before loading a model, without loading one: the batch shapes over
    ``world_size`` processes, the generator / teacher names and their agreement with the recipe,
    the method's own checks, the reward names and options; then the prompts file, the run folder
    and the reward weight files. Returns a short summary; raises a one-line error
    (:class:`ConfigError`, ``UnknownNameError``, ``MissingWeightsError``)."""
    from tdm_r1.models.preset import resolve_model
    from tdm_r1.registry import METHODS, REWARDS
    from tdm_r1.rewards.base import check_reward_options
    from tdm_r1.train.model_check import check_model_recipe

    check_world(cfg, world_size)
    model = resolve_model(cfg.model.name)
    check_model_recipe(cfg, model)
    METHODS.get(cfg.method_name).check(cfg, model)
    teacher = resolve_model(cfg.model.teacher).name if cfg.model.teacher else "the model's base"
    rewards = {REWARDS.canonical(name): w for name, w in cfg.rewards.items()}
    unknown = sorted(set(cfg.reward_options) - set(cfg.rewards) - set(rewards))
    if unknown:
        raise ConfigError(
            f"reward_options for {unknown}, which are not among the rewards {sorted(cfg.rewards)}"
        )
    if cfg.rewards:
        check_reward_options(cfg.rewards, cfg.reward_options)  # every option against its signature
    # then what the machine must provide: the prompts, a writable run folder, the reward weights
    check_prompts(cfg)
    check_run_folder(cfg.run_dir())
    if cfg.rewards:
        check_reward_files(cfg)
    n, mb = cfg.samples_per_epoch, cfg.method.micro_batch
    what = ", ".join(f"{k}={v:g}" for k, v in rewards.items()) or "none (TDM distillation)"
    data = f"toy grammar {cfg.data.toy_tasks}" if cfg.data.source == "toy" else f"file {cfg.data.path}"
    return (
        f"config OK ({cfg.name}, method {cfg.method_name}): {cfg.rollout.prompts_per_epoch} prompts x {cfg.rollout.group_size} images = "
        f"{n} samples per epoch, {n // mb} micro-batches of {mb} ({mb // world_size} per process x "
        f"{world_size}); generator {model.name}, teacher {teacher}; rewards {what}; prompts: {data}; "
        f"run folder {cfg.run_dir()}"
    )
