"""An epoch's samples: the group-contiguous plan and the deterministic rollout with its rewards."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from tdm_r1.sampling import sample
from tdm_r1.schedule import FlowSchedule
from tdm_r1.train.config import TrainConfig
from tdm_r1.train.methods.base import GEN


@dataclass
class EpochPlan:
    """Which samples an epoch has and how they are cut into micro-batches.

    Attributes:
        prompts: (P,) prompt records (dicts with ``prompt`` and metadata) of the epoch.
        order: (N,) global sample indices in micro-batch order; sample i shows prompt i // G.
        local: this process's positions in ``order`` (its share of every micro-batch).
    """

    prompts: list[dict[str, Any]]
    order: list[int]
    local: list[int]


@dataclass
class Rollout:
    """This process's rollout samples, in the order of ``EpochPlan.local``."""

    index: torch.Tensor  # (n,) global sample indices
    group: torch.Tensor  # (n,) prompt (group) index
    prompts: list[str]
    metadata: list[dict[str, Any]]
    latents: torch.Tensor  # (n, K+1, C, h, w) boundary latents (CPU, float32)
    rewards: torch.Tensor  # (n,) rewards (NaN = unscored)
    details: dict[str, list[Any]]


def plan_epoch(
    cfg: TrainConfig, prompts: list[dict[str, Any]], order_seed: int, world: int, rank: int
) -> EpochPlan:
    """Group-contiguous order: the groups are shuffled, a group's members stay together.

    A global micro-batch then holds whole groups (micro_batch a multiple of group_size), or a
    group fills several consecutive micro-batches (a "block", group_size a multiple of
    micro_batch); each process takes its slice of every global micro-batch.
    """
    n, g = cfg.samples_per_epoch, cfg.rollout.group_size
    perm = torch.randperm(cfg.rollout.prompts_per_epoch, generator=torch.Generator().manual_seed(order_seed))
    order = [k * g + i for k in perm.tolist() for i in range(g)]
    mb, per = cfg.method.micro_batch, cfg.method.micro_batch // world
    local: list[int] = []
    for start in range(0, n, mb):
        local.extend(range(start + rank * per, start + (rank + 1) * per))
    return EpochPlan(prompts=prompts, order=order, local=local)


def run_rollout(
    adapter: Any,
    schedule: FlowSchedule,
    plan: EpochPlan,
    *,
    group_size: int,
    batch_size: int,
    noise_seeds: Callable[[list[int]], list[int]],
    device: torch.device,
    reward: Any | None = None,
    async_rewards: bool = True,
) -> Rollout:
    """K deterministic steps of the generator for this process's samples, every boundary kept.

    Decoded images are scored by ``reward`` in a worker thread while the next chunk is generated.
    ``noise_seeds`` maps global sample indices to their initial-noise seeds.
    """
    index = [plan.order[p] for p in plan.local]
    groups = [i // group_size for i in index]
    recs = [plan.prompts[k] for k in groups]
    prompts = [r["prompt"] for r in recs]
    seeds = noise_seeds(index)
    height, width = adapter.sampling.height, adapter.sampling.width
    lat_chunks: list[torch.Tensor] = []
    futures: list[Future] = []
    pool = ThreadPoolExecutor(max_workers=1) if (reward is not None and async_rewards) else None
    try:
        for s in range(0, len(prompts), batch_size):
            cond = adapter.encode_prompts(prompts[s : s + batch_size])
            noise = adapter.initial_noise(seeds[s : s + batch_size], height, width).to(device)
            traj = sample(adapter, cond, noise, schedule, guidance=1.0, role=GEN, return_x0=False)
            lat_chunks.append(traj.latents.cpu())
            if reward is not None:
                images = adapter.decode(traj.final)
                args = dict(
                    images=images.cpu(),
                    prompts=prompts[s : s + batch_size],
                    metadata=recs[s : s + batch_size],
                )
                futures.append(pool.submit(reward, **args) if pool else _done(reward(**args)))
        outs = [f.result() for f in futures]
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if outs:
        rewards = torch.cat([o.scores for o in outs])
        details: dict[str, list[Any]] = {}
        for o in outs:
            for k, col in o.details.items():
                details.setdefault(k, []).extend(col.tolist() if isinstance(col, torch.Tensor) else list(col))
    else:
        rewards, details = torch.full((len(prompts),), float("nan")), {}
    return Rollout(
        index=torch.tensor(index),
        group=torch.tensor(groups),
        prompts=prompts,
        metadata=recs,
        latents=torch.cat(lat_chunks),
        rewards=rewards,
        details=details,
    )


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut
