"""Reusing a result already in ``results/`` instead of evaluating again.

A committed result stands for a new evaluation when everything that decides its numbers is the
same: the model's image identity (the content of its weights, LoRA layout, dtype, options and
sampling settings; not its name: see ``tdm_r1.models.identity``), the benchmark's definition and version, the identity of every reward
(its version string, which carries engines and settings) and the run being complete (no
``--limit``), with the per-sample file that paired deltas need. Anything else is evaluated again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _reward_versions(bench: Any) -> dict[str, str]:
    """metric -> version string of the reward that scores it now (rewards are built: cheap for toys)."""
    from tdm_r1.eval.reward_jobs import plan_rewards

    jobs, _ = plan_rewards([bench], {})
    out: dict[str, str] = {}
    for job in jobs:
        version = str(getattr(job.build("cpu"), "version", ""))
        for _, use in job.uses:
            out[use.metric] = version
    return out


def identity_changes(recorded: Any, now: dict[str, Any], limit: int = 3) -> str:
    """The first fields that differ between two image identities, e.g. ``sampling.steps: 4 -> 8``."""
    if not isinstance(recorded, dict):
        return "the result records no image identity: it predates them"
    diffs: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
        elif a != b:
            diffs.append(f"{where}: {a!r} -> {b!r}")

    walk(recorded, now, "")
    return (
        "; ".join(diffs[:limit]) + (f"; {len(diffs) - limit} more" if len(diffs) > limit else "")
        or "same fields"
    )


def reusable_result(model: str, benchmark: str, results_root: Path) -> tuple[bool, str]:
    """(True, why) when ``results/<benchmark>/<model>`` can stand for a new evaluation, else (False, why)."""
    from tdm_r1.eval.model import EvalModel
    from tdm_r1.eval.results import run_files
    from tdm_r1.registry import BENCHMARKS

    files = run_files(benchmark, model, results_root)
    for path in (files.csv, files.meta, files.scores):
        if not path.is_file():
            return False, f"{path} is missing"
    try:
        meta = json.loads(files.meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return False, f"{files.meta} is unreadable ({exc})"
    bench = BENCHMARKS.get(benchmark)
    if meta.get("limit") is not None:
        return False, "it is a --limit run"
    if json.dumps(meta.get("benchmark"), sort_keys=True) != json.dumps(bench.to_dict(), sort_keys=True):
        return (
            False,
            f"the suite changed (version {meta.get('benchmark', {}).get('version')} -> {bench.version})",
        )
    handle = EvalModel.of(model)
    recorded = meta.get("model", {})
    if recorded.get("config_hash") != handle.config_hash():
        changed = identity_changes(recorded.get("identity"), handle.image_identity())
        return False, f"the model's image identity changed ({changed})"
    versions = _reward_versions(bench)
    for entry in meta.get("rewards", []):
        recorded = entry.get("reward_versions") or []
        if recorded != [versions.get(entry.get("metric"))]:
            return (
                False,
                f"reward {entry.get('name')!r} changed ({recorded} -> {versions.get(entry.get('metric'))})",
            )
    return True, f"{files.csv} matches the model, suite v{bench.version} and reward identities"
