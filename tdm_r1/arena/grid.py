"""The arena's grid: its cells (method x start model x reward), each cell's training config at the
equal budget, and the evaluation every cell gets.

A cell is one shipped toy preset (``toy-<method>-<teacher|4step>-<reward>``; TDM-R1 on the 4-step
student is ``toy-<reward>``) trained for ``budget`` reward evaluations: ``max_epochs = budget /
(prompts_per_epoch x group_size)``, since every method here scores each rollout image once. The
budget counts reward evaluations because the reward is the expensive, non-differentiable part;
wall-clock and NFE, which differ per method for the same budget, are reported beside it.

A cell's identity is the hash of its resolved training config and its evaluation suite: the
arena does not redo a cell whose row in ``results/arena/<reward>.csv`` carries the same hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError

#: Bumped when what a cell measures changes (its row is then redone).
ARENA_VERSION = "1"
#: The start models of the toy world, and their short names in preset and run names.
START_MODELS = {"toy-4step": "4step", "toy-teacher": "teacher"}
REWARDS = ("geneval", "ocr")
METHOD_ORDER = ("tdm-r1", "flow-grpo", "diffusionnft", "dgpo")
#: The issue's grid: TDM-R1 on the student; the multi-step methods on the 100-NFE teacher (their
#: home); Flow-GRPO and DGPO directly on the student ("direct RL on a few-step model").
DEFAULT_CELLS: tuple[tuple[str, str], ...] = (
    ("tdm-r1", "toy-4step"),
    ("flow-grpo", "toy-teacher"),
    ("diffusionnft", "toy-teacher"),
    ("dgpo", "toy-teacher"),
    ("flow-grpo", "toy-4step"),
    ("dgpo", "toy-4step"),
)
#: Reward evaluations per cell of the measured grid (16 epochs of 8 prompts x 8 images).
DEFAULT_BUDGET = 1024
#: reward -> (in-domain suite, its headline metric), (out-of-domain suite, its metric). The arena
#: suites are balanced subsets of toy-geneval / toy-ocr (same cases, ids and seeds; fewer of them),
#: small enough that the 100-NFE models of the grid are evaluated in minutes on 2 CPU cores.
SUITES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "geneval": (("toy-geneval-arena", "overall"), ("toy-ocr-arena", "ocr")),
    "ocr": (("toy-ocr-arena", "ocr"), ("toy-geneval-arena", "overall")),
}


@dataclass(frozen=True)
class Cell:
    """One arena run: ``method`` trained from ``model`` with ``reward``."""

    method: str
    model: str
    reward: str

    @property
    def label(self) -> str:
        """``method @ model`` (a row of the arena table; the reward is the table)."""
        return f"{self.method} @ {self.model}"

    @property
    def slug(self) -> str:
        return f"{self.method}-{START_MODELS[self.model]}"

    @property
    def preset(self) -> str:
        """The shipped training preset of this cell."""
        if self.method == "tdm-r1" and self.model == "toy-4step":
            return f"toy-{self.reward}"
        return f"toy-{self.method}-{START_MODELS[self.model]}-{self.reward}"

    @property
    def run_name(self) -> str:
        """The run's (and its exported model's) name: ``arena-<reward>-<method>-<model>``."""
        return f"arena-{self.reward}-{self.slug}"


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
) -> list[Cell]:
    """The default grid's cells, optionally restricted to some methods / rewards / start models."""
    ms = _pick(methods, METHOD_ORDER, "method")
    rs = _pick(rewards, REWARDS, "reward")
    starts = _pick(models, tuple(START_MODELS), "model")
    cells = [Cell(m, s, r) for r in rs for (m, s) in DEFAULT_CELLS if m in ms and s in starts]
    if not cells:
        raise ConfigError(
            f"no arena cell is both in methods {ms} and on models {starts}; the grid is "
            + ", ".join(f"{m} @ {s}" for m, s in DEFAULT_CELLS)
        )
    return cells


def cell_config(cell: Cell, budget: int, runs_root: Path) -> Any:
    """The cell's resolved :class:`~tdm_r1.train.config.TrainConfig` at ``budget`` reward evaluations.

    The preset's recipe is kept; the arena sets only the work bound (epochs), the run folder (one
    per budget: a run is never resumed into another budget), no time cap, no registration and no
    in-training evaluation (the arena evaluates the final model).
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
    overrides = [
        f"name={cell.run_name}",
        f"output_dir={runs_root / cell.reward / f'{cell.slug}-b{budget}'}",
        f"max_epochs={budget // per_epoch}",
        "max_minutes=0",
        "register_as=null",
        "eval_benchmarks=[]",
        "eval_every=0",
        f"checkpoint_every={max(1, budget // per_epoch // 4)}",
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
