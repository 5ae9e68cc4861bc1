"""The arena's grid: its cells (method x start model x reward x training seed), each cell's
training config at the equal budget, and the evaluation every cell gets.

A cell is one shipped toy preset (``toy-<method>-<teacher|4step>-<reward>``; TDM-R1 on the 4-step
student is ``toy-<reward>``) trained with one seed for ``budget`` reward evaluations: ``max_epochs
= budget / (prompts_per_epoch x group_size)``, since every method here scores each rollout image
once. The budget counts reward evaluations because the reward is the expensive, non-differentiable
part; wall-clock and NFE, which differ per method for the same budget, are reported beside it.
Every cell exports its EMA generator at a quarter and a half of the budget as well as at the end,
so that the table and the curves give the gain against the budget spent.

The seed is the run's ``seed``: the one root of its named streams (``tdm_r1.seeds``: prompt
order, rollout noise, training noise), so seed ``s`` gives every method the same training prompts
epoch by epoch and the same initial noises.

A cell's identity is the hash of its resolved training config and its evaluation suites: the
arena does not redo a cell whose rows in ``results/arena/<reward>.csv`` carry the same hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError

#: Bumped when what a cell measures changes (its rows are then redone). v2: training seeds, budget
#: checkpoints, the half-unseen suites (toy-*-rl), the default grid at 4 NFE.
ARENA_VERSION = "2"
#: The start models of the toy world, and their short names in preset and run names.
START_MODELS = {"toy-4step": "4step", "toy-teacher": "teacher"}
REWARDS = ("geneval", "ocr")


def method_order() -> tuple[str, ...]:
    """The arena's methods in registration order (built-ins first): every registered method with a
    toy recipe and a reward (the registry's ``toy_recipes``; a plug-in's too)."""
    from tdm_r1.registry import METHODS

    return tuple(
        n
        for n in METHODS.names_in_order()
        if METHODS.meta(n).get("toy_recipes") and METHODS.meta(n).get("reward", True)
    )


def _recipes(method: str) -> dict[str, str]:
    from tdm_r1.registry import METHODS

    return dict(METHODS.meta(method).get("toy_recipes") or {})


def default_cells() -> tuple[tuple[str, str], ...]:
    """The default grid: every method from the 4-step student, sampled at 4 NFE, so that every pair
    of methods is a paired head-to-head comparison (same start, same NFE, same seeds, same prompts)."""
    return tuple((m, "toy-4step") for m in method_order() if "toy-4step" in _recipes(m))


def teacher_cells() -> tuple[tuple[str, str], ...]:
    """Opt-in (``--models toy-teacher``): the multi-step methods at home on the 100-NFE teacher. Their
    10-step CFG rollouts make them the longest cells; they are outside the default grid's time."""
    return tuple((m, "toy-teacher") for m in method_order() if "toy-teacher" in _recipes(m))


def all_cells() -> tuple[tuple[str, str], ...]:
    return default_cells() + teacher_cells()


#: Training seeds of every cell: between-seed variance enters every CI of the table.
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
#: Fractions of the budget at which a cell's EMA generator is evaluated (the budget curve).
CHECKPOINTS: tuple[float, ...] = (0.25, 0.5, 1.0)
#: Reward evaluations per cell of the measured grid (16 epochs of 8 prompts x 8 images).
DEFAULT_BUDGET = 1024
#: reward -> (in-domain suite, its headline metric), (out-of-domain suite, its metric). The arena
#: suites are subsets of toy-geneval / toy-ocr (same cases, ids and seeds; fewer of them), half of
#: each task's cases on combinations RL training never sees (tdm_r1/toyworld/holdout.py), so the
#: table has a seen and an unseen row that both measure something.
SUITES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "geneval": (("toy-geneval-rl", "overall"), ("toy-ocr-rl", "ocr")),
    "ocr": (("toy-ocr-rl", "ocr"), ("toy-geneval-rl", "overall")),
}
#: The suite's task for :func:`tdm_r1.toyworld.grammar.rl_unseen_ids`.
SUITE_TASK = {"toy-geneval-rl": "geneval", "toy-ocr-rl": "ocr"}


@dataclass(frozen=True)
class Cell:
    """One arena run: ``method`` trained from ``model`` with ``reward`` and training seed ``seed``."""

    method: str
    model: str
    reward: str
    seed: int = 0

    @property
    def label(self) -> str:
        """``method @ model`` (a row of the arena table; the reward is the table, seeds are pooled)."""
        return f"{self.method} @ {self.model}"

    @property
    def slug(self) -> str:
        return f"{self.method}-{START_MODELS[self.model]}"

    @property
    def preset(self) -> str:
        """The training recipe of this cell: the method's toy recipe for the start model (its
        registry entry's ``toy_recipes``, e.g. ``toy-dgpo-4step-{reward}``) with the reward."""
        recipe = _recipes(self.method).get(self.model)
        if recipe is None:
            raise ConfigError(f"method {self.method!r} has no toy recipe for start model {self.model!r}")
        return recipe.format(reward=self.reward)

    @property
    def run_name(self) -> str:
        """The run's name: ``arena-<reward>-<method>-<model>-s<seed>``."""
        return f"arena-{self.reward}-{self.slug}-s{self.seed}"

    def checkpoint_name(self, reward_evals: int) -> str:
        """The evaluated model at a checkpoint: ``<run_name>-r<reward evaluations>``."""
        return f"{self.run_name}-r{reward_evals}"


def _pick(given: list[str] | None, known: tuple[str, ...], what: str) -> list[str]:
    if not given:
        return list(known)
    unknown = [g for g in given if g not in known]
    if unknown:
        raise ConfigError(f"unknown arena {what} {', '.join(unknown)}: choose from {', '.join(known)}")
    return [k for k in known if k in given]


def select_cells(
    methods: list[str] | None = None,
    rewards: list[str] | None = None,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
) -> list[Cell]:
    """The grid's cells, optionally restricted to some methods / rewards, on some start models
    (default the 4-step student; ``toy-teacher`` adds the teacher cells), for every seed."""
    ms = _pick(methods, method_order(), "method")
    rs = _pick(rewards, REWARDS, "reward")
    starts = _pick(models or ["toy-4step"], tuple(START_MODELS), "model")
    if seeds is not None and (not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"arena seeds must be distinct integers >= 0, got {seeds}")
    grid = [(m, s) for (m, s) in all_cells() if m in ms and s in starts]
    # seed by seed: a grid stopped part-way has every method at the seeds it reached (head to head)
    cells = [Cell(m, s, r, seed) for seed in (seeds or DEFAULT_SEEDS) for r in rs for (m, s) in grid]
    if not cells:
        raise ConfigError(
            f"no arena cell is both in methods {ms} and on models {starts}; the grid is "
            + ", ".join(f"{m} @ {s}" for m, s in all_cells())
        )
    return cells


def checkpoint_epochs(epochs: int) -> list[int]:
    """The epochs of :data:`CHECKPOINTS` in a run of ``epochs`` (distinct, at least epoch 1)."""
    return sorted({max(1, round(f * epochs)) for f in CHECKPOINTS})


def cell_config(cell: Cell, budget: int, runs_root: Path) -> Any:
    """The cell's resolved :class:`~tdm_r1.train.config.TrainConfig` at ``budget`` reward evaluations.

    The preset's recipe is kept; the arena sets only the seed, the work bound (epochs), the run
    folder (one per budget and seed: a run is never resumed into another), no time cap, no
    registration, no in-training evaluation, and the exports of the budget checkpoints.
    """
    from tdm_r1.train.config import load_train_config

    base = load_train_config(cell.preset)
    per_epoch = base.samples_per_epoch
    if budget < per_epoch or budget % per_epoch:
        raise ConfigError(
            f"--budget {budget} reward evaluations is not a whole number of epochs of {cell.preset} "
            f"({base.rollout.prompts_per_epoch} prompts x {base.rollout.group_size} images = {per_epoch} "
            f"per epoch): use a multiple of {per_epoch}"
        )
    epochs = budget // per_epoch
    overrides = [
        f"name={cell.run_name}",
        f"seed={cell.seed}",
        f"output_dir={runs_root / cell.reward / f'{cell.slug}-b{budget}-s{cell.seed}'}",
        f"max_epochs={epochs}",
        "max_minutes=0",
        "register_as=null",
        "eval_benchmarks=[]",
        "eval_every=0",
        f"export_epochs=[{','.join(str(e) for e in checkpoint_epochs(epochs) if e < epochs)}]",
        f"checkpoint_every={max(1, epochs // 4)}",
    ]
    return load_train_config(cell.preset, overrides=overrides)


def cell_hash(cfg: Any, suite_versions: dict[str, str]) -> str:
    """What makes two runs of a cell the same: the training config (run folder aside), the
    evaluation suites' versions and the arena version."""
    from tdm_r1.config import to_dict

    tree = to_dict(cfg)
    tree.pop("output_dir", None)
    blob = json.dumps(
        {"config": tree, "suites": suite_versions, "arena": ARENA_VERSION}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
