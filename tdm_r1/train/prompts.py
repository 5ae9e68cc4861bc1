"""Training prompts: the toy grammar, or a prompts file (.txt one per line, .jsonl with metadata).

Every process draws the same prompts (same seed), so a global batch is identical whatever the
number of processes; the sampler state is saved in checkpoints (the data position).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """.txt -> [{"prompt": line}], .jsonl -> records with their metadata (see ``tdm_r1.apps.generation``)."""
    from tdm_r1.prompt_files import read_prompts

    return [{"prompt": r.prompt, **r.metadata} for r in read_prompts(path)]


class PromptSource:
    """Seeded, resumable stream of prompt records (dicts with ``prompt`` and metadata)."""

    def __init__(self, cfg: Any, *, seed: int) -> None:
        self.kind = cfg.source
        if cfg.source == "toy":
            from tdm_r1.toyworld.grammar import PromptSampler

            try:
                self.sampler = PromptSampler(split=cfg.split, weights=dict(cfg.toy_tasks), seed=seed)
            except ValueError as exc:
                raise ConfigError(f"data.toy_tasks: {exc}") from exc
        else:
            self.records = read_prompt_file(cfg.path)
            if not self.records:
                raise ConfigError(f"prompts file {cfg.path} is empty")
            self.rng = random.Random(seed)

    def sample(self, n: int) -> list[dict[str, Any]]:
        if self.kind == "toy":
            return self.sampler.sample(n)
        return [dict(self.rng.choice(self.records)) for _ in range(n)]

    def state(self) -> Any:
        return self.sampler.state() if self.kind == "toy" else self.rng.getstate()

    def set_state(self, state: Any) -> None:
        if self.kind == "toy":
            self.sampler.set_state(state)
        else:
            self.rng.setstate(state)
