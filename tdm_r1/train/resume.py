"""Resuming a run: the config it was started with decides, and a changed config is refused.

A run folder's ``config.yaml`` is the resolved config of the run. Reusing the run's name with
another reward, model or hyper-parameter would silently continue the old run under a new label,
so a resume compares the two configs before anything is loaded or written: keys that only change
how long or how visibly the run goes on (``SAFE_TO_CHANGE``) may differ; any other difference is
an error listing every differing key. The same file is what the processes of a multi-process run
read (:func:`write_run_config`): ``tdmbench train --config <run>/config.yaml`` continues the run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError

log = logging.getLogger(__name__)

#: Keys (dotted, or a prefix ending in ".") that a resumed run may change.
SAFE_TO_CHANGE: tuple[str, ...] = (
    "max_epochs",
    "max_minutes",
    "checkpoint_every",
    "eval_every",
    "eval_benchmarks",
    "export_epochs",
    "eval_limit",
    "eval_batch_size",
    "trackers",
    "output_dir",
    "model.device",
    "rollout.batch_size",  # rollout chunking only: every sample has its own seed
    "rollout.async_rewards",
)
#: Stands for a key that one of two configs does not have.
ABSENT = "(absent)"
#: Reward options that change speed, not scores (process pools, threads).
SAFE_REWARD_OPTIONS = ("workers", "threads", "batch_size")


#: Mappings whose order is part of the value: the toy prompt sampler draws tasks in this order, so
#: the same weights written in another order draw other prompts.
ORDERED = ("data.toy_tasks",)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if f"{prefix}{k}" in ORDERED and isinstance(v, dict):
            out[f"{prefix}{k}"] = [[name, w] for name, w in v.items()]
        elif isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _is_safe(key: str) -> bool:
    if key.startswith("reward_options.") and key.rsplit(".", 1)[-1] in SAFE_REWARD_OPTIONS:
        return True
    return any(key == s or key.startswith(s + ".") for s in SAFE_TO_CHANGE)


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every leaf that differs (JSON-normalised: tuples are lists)."""
    a = _flatten(json.loads(json.dumps(old, default=str)))
    b = _flatten(json.loads(json.dumps(new, default=str)))
    return [
        (k, a.get(k, ABSENT), b.get(k, ABSENT))
        for k in sorted(set(a) | set(b))
        if a.get(k, ABSENT) != b.get(k, ABSENT)
    ]


def _added_at_default(diffs: list[tuple[str, Any, Any]]) -> set[str]:
    """Keys the run's config does not have and the new one holds at their default: fields added to
    ``TrainConfig`` after the run started, whose default keeps the old behaviour (a new option
    enters at a value that changes nothing), so they do not stop a resume."""
    from tdm_r1.config import to_dict
    from tdm_r1.train.config import TrainConfig

    defaults = _flatten(json.loads(json.dumps(to_dict(TrainConfig()), default=str)))
    return {k for k, a, b in diffs if a == ABSENT and k in defaults and defaults[k] == b}


def check_resume(run_dir: Path, new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Compare ``new`` (a resolved config dict) with ``<run_dir>/config.yaml`` of an existing run.

    Returns the safe differences (the caller logs them and rewrites ``config.yaml``); raises
    :class:`ConfigError` listing the others. Does nothing for a run without checkpoints.
    """
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the run's config {path}: {exc}") from exc
    diffs = config_differences(old, new)
    added = _added_at_default(diffs)
    unsafe = [d for d in diffs if not _is_safe(d[0]) and d[0] not in added]
    if unsafe:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in unsafe)
        raise ConfigError(
            f"run folder {run_dir} holds a run started with another config ({listed}). Resuming would "
            "continue the old run under the new settings: choose another --name (or output_dir) for a "
            f"new run, or delete {run_dir} to start this one over."
        )
    return [d for d in diffs if d[0] != "output_dir"]


def write_run_config(cfg: Any) -> Path:
    """Write ``cfg`` (a resolved ``TrainConfig``) as ``<run>/config.yaml`` and return the path.

    The one source every process of a multi-process run reads (``--config <run>/config.yaml``)
    and a later resume is compared with. A run with checkpoints is checked first
    (:func:`check_resume`): a changed config is refused before anything is written or launched.
    """
    from tdm_r1.config import dump_yaml, to_dict
    from tdm_r1.train import checkpoint

    run_dir = cfg.run_dir()
    if checkpoint.complete(run_dir / "checkpoints"):
        for key, old, new in check_resume(run_dir, to_dict(cfg)):
            log.info("resuming with %s changed: %r -> %r", key, old, new)
    path = run_dir / "config.yaml"
    dump_yaml(cfg, path)
    return path
