"""Which rewards an evaluation runs: one job per distinct (reward, options) over all benchmarks.

A reward that several benchmarks use with the same options is built and run once for all of
them. A job knows its score-cache identity without building the reward, so a fully cached run
never loads a reward model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tdm_r1.errors import ConfigError, UnknownNameError
from tdm_r1.eval.benchmark import Benchmark, RewardUse
from tdm_r1.eval.cache import stable_json

log = logging.getLogger(__name__)


@dataclass
class RewardJob:
    """One reward with one set of options, scoring every benchmark that uses it."""

    name: str  # canonical registry name
    cls: Any
    options: dict[str, Any]
    optional: bool
    uses: list[tuple[str, RewardUse]] = field(default_factory=list)  # (benchmark, use)

    @property
    def key_identity(self) -> str:
        """Reward identity in score keys, known without building the reward: the class version, or
        ``cls.key_version(options)`` where the identity depends on more than the options (files)."""
        key_version = getattr(self.cls, "key_version", None)
        version = key_version(self.options) if callable(key_version) else getattr(self.cls, "version", "")
        return f"{self.name}@{version}"

    @property
    def higher_is_better(self) -> bool:
        return bool(getattr(self.cls, "higher_is_better", True))

    def build(self, device: Any) -> Any:
        from tdm_r1.rewards.base import build_reward

        return build_reward({self.name: 1.0}, options={self.name: dict(self.options)}, device=device)


def plan_rewards(
    benches: Sequence[Benchmark], cli_options: dict[str, dict[str, Any]]
) -> tuple[list[RewardJob], set[tuple[str, str]]]:
    """Distinct (reward, options) jobs of ``benches`` with ``cli_options`` (``--reward-option``) on
    top of each benchmark's options; and the (benchmark, metric) uses skipped because an optional
    reward is not registered."""
    from tdm_r1.registry import REWARDS

    cli = {REWARDS.canonical(k): v for k, v in cli_options.items()}
    used = {REWARDS.canonical(u.name) for b in benches for _, u in b.reward_uses() if u.name in REWARDS}
    unused = sorted(set(cli) - used)
    if unused:
        raise ConfigError(
            f"--reward-option given for {unused}, which no selected benchmark uses "
            f"(they use: {', '.join(sorted(used))})"
        )
    jobs: dict[tuple[str, str], RewardJob] = {}
    skipped: set[tuple[str, str]] = set()
    for bench in benches:
        for _role, use in bench.reward_uses():
            try:
                name = REWARDS.canonical(use.name)
            except UnknownNameError:
                if not use.optional:
                    raise
                log.warning("optional reward %r is not registered; %s skips it", use.name, bench.name)
                skipped.add((bench.name, use.metric))
                continue
            options = {**use.options, **cli.get(name, {})}
            key = (name, stable_json(options))
            if key not in jobs:
                jobs[key] = RewardJob(name, REWARDS.get(name), options, use.optional)
            jobs[key].optional = jobs[key].optional and use.optional
            jobs[key].uses.append((bench.name, use))
    return list(jobs.values()), skipped


def check_reward_weights(jobs: Sequence[RewardJob]) -> None:
    """Resolve every weight file of every required reward (local option, env var, HF cache, or a
    download when online); raises :class:`MissingWeightsError` naming how to provide it."""
    from tdm_r1.weights import resolve

    for job in jobs:
        if job.optional:
            continue
        needed = getattr(job.cls, "required_weights", None)
        files = needed(job.options) if callable(needed) else getattr(job.cls, "weight_files", ())
        for wf in files:
            # "--reward-option geneval.detector_path" -> the reward's "detector_path" option
            option = wf.option.rsplit(" ", 1)[-1].split(".", 1)[-1] if "." in wf.option else None
            resolve(wf, job.options.get(option) if option else None)
