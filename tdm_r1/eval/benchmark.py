"""A benchmark suite: its YAML spec, its prompts and its (prompt, seed) work items.

A suite is data (lm-eval's task-YAML idea): where the prompts come from (an official file fetched
by sha256, or a generator such as the toy world's grammar), how many images per prompt with which
seeds, and which rewards score them. ``in_domain`` rewards are what the suite measures (in-domain
for a model RL-trained on that reward); ``out_of_domain`` rewards are image-quality metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tdm_r1.config import from_dict, load_yaml, to_dict
from tdm_r1.data import GENEVAL_TASKS  # one definition, re-exported here
from tdm_r1.errors import ConfigError

Role = Literal["in_domain", "out_of_domain"]


@dataclass
class PromptSource:
    """Where the prompts come from.

    ``type: file``: an official data file (``data`` names it in ``tdm_r1.data``), read as
    ``lines`` (one prompt per line) or ``jsonl`` (objects with a ``prompt`` key; the other keys are
    the prompt's metadata); ``dedupe`` drops repeated prompts keeping the first occurrence.
    ``type: toy``: ``generator`` is ``module:function`` called with ``args``; it returns dicts with
    ``prompt``, a stable ``id`` and metadata fields.
    ``count``: the number of prompts the source yields (checked on load, shown by ``ls``).
    """

    type: Literal["file", "toy"] = "file"
    data: str = ""
    format: Literal["lines", "jsonl"] = "lines"
    dedupe: bool = False
    generator: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    count: int | None = None

    def __post_init__(self) -> None:
        if self.type == "file" and not self.data:
            raise ConfigError("prompts.type 'file' needs prompts.data (a name from `tdmbench ls data`)")
        if self.type == "toy" and not self.generator:
            raise ConfigError("prompts.type 'toy' needs prompts.generator ('module:function')")


@dataclass
class RewardUse:
    """One reward scoring a benchmark.

    ``metric``: the result column (default: the reward name). ``aggregate``: ``mean`` (one metric,
    the mean score) or ``geneval`` (``overall`` + one metric per task, from per-image ``correct``).
    ``optional``: skip this reward with a warning when it is not installed or has no weights.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    metric: str = ""
    aggregate: Literal["mean", "geneval"] = "mean"
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.metric:
            self.metric = self.name


@dataclass(frozen=True)
class Prompt:
    """One benchmark case. ``seed_offset`` is added to the suite's seeds: a suite that repeats a
    prompt in several cases (the toy suites, to weigh every task equally) gives each repeat its own
    offset, so that repeats are new images rather than copies of the first one."""

    id: str
    text: str
    metadata: dict[str, Any]
    seed_offset: int = 0


@dataclass(frozen=True)
class WorkItem:
    """One image to generate and score: prompt ``index`` (in load order), ``sample`` k, ``seed``."""

    index: int
    prompt: Prompt
    sample: int
    seed: int


@dataclass
class Benchmark:
    name: str
    version: str
    prompts: PromptSource
    description: str = ""
    images_per_prompt: int = 1
    seeds: list[int] = field(default_factory=list)
    in_domain: list[RewardUse] = field(default_factory=list)
    out_of_domain: list[RewardUse] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images_per_prompt < 1:
            raise ConfigError(f"benchmark {self.name!r}: images_per_prompt must be >= 1")
        if not self.seeds:
            self.seeds = list(range(self.images_per_prompt))
        if len(self.seeds) != self.images_per_prompt:
            raise ConfigError(
                f"benchmark {self.name!r}: {len(self.seeds)} seeds for images_per_prompt="
                f"{self.images_per_prompt}; give one seed per image (or none for 0..n-1)"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"benchmark {self.name!r}: seeds must be distinct, got {self.seeds}")
        if not self.in_domain and not self.out_of_domain:
            raise ConfigError(f"benchmark {self.name!r} has no rewards (in_domain / out_of_domain)")
        metrics: list[str] = []
        for _role, use in self.reward_uses():
            metrics += ["overall", *GENEVAL_TASKS] if use.aggregate == "geneval" else [use.metric]
        dup = sorted({m for m in metrics if metrics.count(m) > 1})
        if dup:
            raise ConfigError(
                f"benchmark {self.name!r}: metric names {dup} are produced twice; give the rewards "
                "distinct `metric` names (a geneval aggregate produces 'overall' and the task names)"
            )

    # -- rewards ------------------------------------------------------------------------------
    def reward_uses(self) -> list[tuple[Role, RewardUse]]:
        return [("in_domain", u) for u in self.in_domain] + [("out_of_domain", u) for u in self.out_of_domain]

    # -- prompts ------------------------------------------------------------------------------
    def load_prompts(self, limit: int | None = None) -> list[Prompt]:
        """The suite's prompts in a fixed order; ``limit`` keeps the first ``limit``.

        Raises :class:`~tdm_r1.errors.MissingDataError` (naming ``tdmbench data fetch``) when an
        official file is missing.
        """
        if limit is not None and limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        src = self.prompts
        prompts = self._read_file(src) if src.type == "file" else self._generate(src)
        if src.count is not None and len(prompts) != src.count:
            raise ConfigError(
                f"benchmark {self.name!r} expects {src.count} prompts but its source gave {len(prompts)}"
            )
        ids = [p.id for p in prompts]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"benchmark {self.name!r}: prompt ids are not unique")
        return prompts[:limit] if limit is not None else prompts

    def work_items(self, limit: int | None = None) -> list[WorkItem]:
        """Every (prompt, seed) pair, prompt-major: ``len(prompts) * images_per_prompt`` items."""
        return [
            WorkItem(index=i, prompt=p, sample=k, seed=p.seed_offset + seed)
            for i, p in enumerate(self.load_prompts(limit))
            for k, seed in enumerate(self.seeds)
        ]

    def _read_file(self, src: PromptSource) -> list[Prompt]:
        from tdm_r1.data import data_path, read_lines

        lines = read_lines(data_path(src.data))
        if src.format == "lines":
            texts = list(dict.fromkeys(lines)) if src.dedupe else lines
            return [Prompt(id=f"{i:05d}", text=t, metadata={}) for i, t in enumerate(texts)]
        out: list[Prompt] = []
        seen: set[str] = set()
        for lineno, line in enumerate(lines, 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{src.data}: line {lineno} is not JSON: {exc}") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise ConfigError(
                    f"{src.data}: line {lineno} needs a string 'prompt' (got no key, null or a number)"
                )
            if src.dedupe:
                if obj["prompt"] in seen:
                    continue
                seen.add(obj["prompt"])
            meta = {k: v for k, v in obj.items() if k not in ("prompt", "id")}
            pid = str(obj["id"]) if "id" in obj else f"{len(out):05d}"
            out.append(Prompt(id=pid, text=str(obj["prompt"]), metadata=meta))
        return out

    def _generate(self, src: PromptSource) -> list[Prompt]:
        from tdm_r1.plugins import resolve_callable

        items = resolve_callable(src.generator)(**src.args)
        out: list[Prompt] = []
        for i, obj in enumerate(items):
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or "id" not in obj:
                raise ConfigError(
                    f"{src.generator} item {i} must be a dict with a string 'prompt' and an 'id'"
                )
            meta = {k: v for k, v in obj.items() if k not in ("prompt", "id", "seed_offset")}
            offset = int(obj.get("seed_offset", 0))
            out.append(Prompt(id=str(obj["id"]), text=str(obj["prompt"]), metadata=meta, seed_offset=offset))
        keys = [(p.text, p.seed_offset) for p in out]
        if len(set(keys)) != len(keys):
            raise ConfigError(
                f"{src.generator} repeats a prompt with the same seed_offset: the repeats would be "
                "copies of one image; give each repeat its own 'seed_offset'"
            )
        return out

    # -- listing ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        src = self.prompts
        where = src.data if src.type == "file" else f"toy: {src.generator}"
        return {
            "version": self.version,
            "prompts": src.count if src.count is not None else "?",
            "images/prompt": self.images_per_prompt,
            "source": where,
            "in-domain": ", ".join(u.name for u in self.in_domain),
            "out-of-domain": ", ".join(u.name for u in self.out_of_domain),
            "description": self.description,
        }

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def load_benchmark(path: str | Path) -> Benchmark:
    """Strictly load one benchmark YAML (unknown keys are errors)."""
    data = load_yaml(path)
    try:
        return from_dict(Benchmark, data, path=Path(path).stem)
    except ConfigError as exc:
        raise ConfigError(f"benchmark file {path}: {exc}") from exc
