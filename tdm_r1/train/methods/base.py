"""What a training method is to the training loop: its roles, its per-micro-batch update, its hooks.

The loop (:class:`tdm_r1.train.trainer.Trainer`) owns everything methods share: the model with its
LoRA roles, the prompt stream, rollouts and rewards, group advantages, micro-batching, gradient
accumulation, optimiser steps, the generator EMA, checkpoints, resume, logging and the
distributed path. A method says which LoRA roles it needs and what one micro-batch contributes
to their gradients; the loop calls it. Methods are registered in ``tdm_r1.registry.METHODS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch

    from tdm_r1.models.adapter import Conditioning, FlowAdapter
    from tdm_r1.seeds import Stream
    from tdm_r1.train.config import TrainConfig
    from tdm_r1.train.rollout import Rollout

#: The role the loop exports (and keeps an EMA of): the model being improved.
GEN = "generator"


@dataclass(frozen=True)
class RoleSpec:
    """A LoRA role a method needs.

    Attributes:
        name: role name on the adapter.
        init: LoRA initialisation ("zeros": starts as the base model).
        trainable: gets an optimiser (frozen roles are copies the method updates itself).
        lr_scale: the learning rate is ``optim.lr * lr_scale``.
        betas: AdamW betas.
        copy_from: a frozen copy starts with this role's weights.
    """

    name: str
    init: str = "zeros"
    trainable: bool = True
    lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    copy_from: str | None = None


@dataclass
class Batch:
    """One micro-batch of this process's rollout samples (whole groups, or a piece of a block).

    Attributes:
        micro: micro-step index in the epoch.
        block: block index: the micro-batches of one group share its random draws.
        rows: the micro-batch's positions in the process's :class:`~tdm_r1.train.rollout.Rollout`.
        index: (n,) global sample indices (keys of the per-sample random streams).
        group: (n,) global group (prompt) indices.
        latents: (n, K+1, C, h, w) float32 CPU boundary latents of the deterministic rollout.
        adv: (n,) group advantages (zeros without a reward).
        cond: the prompts' conditioning.
    """

    micro: int
    block: int
    rows: slice
    index: torch.Tensor
    group: torch.Tensor
    latents: torch.Tensor
    adv: torch.Tensor
    cond: Conditioning

    @property
    def sample_keys(self) -> list[int]:
        return self.index.tolist()


def record(metrics: dict[str, list[float]], values: dict[str, float]) -> None:
    """Append one step's values to a method's per-key metric lists (the loop averages them)."""
    for key, val in values.items():
        metrics.setdefault(key, []).append(val)


class Loop(Protocol):
    """What a method may use of the training loop."""

    cfg: TrainConfig
    adapter: FlowAdapter
    device: torch.device
    world: int
    epoch: int
    steps: int
    sigmas: torch.Tensor  # (K+1,) float32 step boundaries of the generator's schedule
    model_sigmas: torch.Tensor  # (K,) float32 sigmas the transformer is told
    train_steps: list[int]  # the schedule's steps long enough to train
    shift: float
    updates: dict[str, int]
    schedule: Any  # the training rollout's FlowSchedule
    reward: Any  # the reward (None without one)

    def seed(self, stream: Stream | str, *keys: int) -> int:
        """The seed of one draw of ``stream`` (a :class:`Stream` or a plug-in's own name) in this
        epoch, keyed by ``keys``: the same on every process and for every batching."""
        ...

    def row_seeds(self, stream: Stream | str, keys: tuple[int, ...], rows: list[int]) -> list[int]:
        """One seed per row (global sample or group index): ``seed(stream, *keys, row)``."""
        ...

    def backward(self, loss: torch.Tensor, role: str) -> None:
        """Backpropagate ``loss`` into ``role``, scaled for gradient accumulation."""
        ...

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over processes (``t`` itself with one process)."""
        ...


class TrainingMethod:
    """Base class of a training method (subclass, set the class variables, register in METHODS).

    Class variables:
        name: registry name (``tdmbench train --method NAME``).
        uses_reward: False for reward-free methods (distillation): no reward is loaded.
        backwards_per_micro: backward calls per trainable role per micro-batch (gradient
            accumulation divides the loss by the number of backward calls per update).
    """

    name: ClassVar[str] = ""
    uses_reward: ClassVar[bool] = True
    #: "ode": the deterministic rollout; "sde": stochastic steps with stored log-probs (:meth:`sde_plan`).
    rollout_kind: ClassVar[str] = "ode"

    @classmethod
    def check(cls, cfg: TrainConfig, preset: Any) -> None:
        """Incompatibilities visible from the config and the model preset, raised before any model loads."""

    @classmethod
    def rollout_steps(cls, cfg: TrainConfig) -> int | None:
        """Steps of the training rollout when they differ from the model's own (None: the model's)."""
        return None

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.cfg = loop.cfg

    @property
    def backwards_per_micro(self) -> int:
        return 1

    def roles(self) -> list[RoleSpec]:
        """The LoRA roles to create (the generator first); trainable ones get an optimiser."""
        raise NotImplementedError

    @property
    def rollout_role(self) -> str | None:
        """The LoRA role that samples the rollouts."""
        return GEN

    @property
    def rollout_guidance(self) -> float:
        """CFG scale of the rollout (1 = off); also the guidance of the exported model."""
        return 1.0

    def sde_plan(self) -> Any:
        """The epoch's :class:`~tdm_r1.train.rollout.SdePlan` (only for ``rollout_kind = "sde"``)."""
        raise NotImplementedError

    def begin_epoch(self, rollout: Rollout, adv: torch.Tensor) -> None:
        """Called once per epoch after the rollout and its advantages, before the micro-batches."""

    def end_epoch(self) -> None:
        """Called once per epoch after its last optimiser step (e.g. to move a sampling copy)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Values the loop adds to the epoch's metrics after :meth:`end_epoch` (e.g. instruments)."""
        return {}

    def train_micro(self, batch: Batch) -> dict[str, list[float]]:
        """Backward this micro-batch's losses into the trainable roles.

        Returns metric values per key; the loop logs the mean of all of an epoch's values.
        """
        raise NotImplementedError

    def after_update(self, role: str) -> None:
        """Called after each optimiser step of ``role`` (e.g. to move frozen copies)."""

    def state(self) -> dict[str, Any]:
        """Extra method state for checkpoints (LoRA roles and optimisers are saved by the loop)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass
