"""An epoch's samples: the group-contiguous plan and the rollout (deterministic, or SDE with
per-step log-probabilities for policy-gradient methods) with its rewards."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from tdm_r1.models.sampling import sample
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
    #: SDE rollouts: (n, K) float32 log-probs of the stored transitions latents[:, k] -> [:, k+1]
    #: (NaN on the deterministic steps), computed under the rollout's weights.
    log_probs: torch.Tensor | None = None


@dataclass(frozen=True)
class SdePlan:
    """Which rollout steps are stochastic and how (:func:`tdm_r1.losses.sde.sde_step`).

    Attributes:
        steps: the stochastic step indices k (the others are Euler ODE steps).
        noise_level: the SDE's a.
        kind: "flow" or "cps".
        sigma_max: the Flow-SDE denominator at sigma = 1 (the grid's second sigma).
        noise_seeds: (step k, global sample indices) -> one seed per sample for the step's noise.
    """

    steps: tuple[int, ...]
    noise_level: float
    kind: str
    sigma_max: float | None
    noise_seeds: Callable[[int, list[int]], list[int]]


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
    role: str | None = GEN,
    guidance: float = 1.0,
    sde: SdePlan | None = None,
) -> Rollout:
    """K steps of ``role`` for this process's samples, every boundary kept.

    Deterministic (``sde=None``; any solver of the schedule), or Euler with the stochastic steps of
    ``sde`` (their log-probs stored). Decoded images are scored by ``reward`` in a worker thread
    while the next chunk is generated. ``noise_seeds`` maps global sample indices to their
    initial-noise seeds. ``guidance`` != 1: classifier-free guidance with the empty prompt.
    """
    index = [plan.order[p] for p in plan.local]
    groups = [i // group_size for i in index]
    recs = [plan.prompts[k] for k in groups]
    prompts = [r["prompt"] for r in recs]
    seeds = noise_seeds(index)
    height, width = adapter.sampling.height, adapter.sampling.width
    lat_chunks: list[torch.Tensor] = []
    lp_chunks: list[torch.Tensor] = []
    futures: list[Future] = []
    pool = ThreadPoolExecutor(max_workers=1) if (reward is not None and async_rewards) else None
    try:
        for s in range(0, len(prompts), batch_size):
            cond = adapter.encode_prompts(prompts[s : s + batch_size])
            noise = adapter.initial_noise(seeds[s : s + batch_size], height, width).to(device)
            if sde is None:
                uncond = adapter.null_conditioning(len(cond)) if guidance != 1.0 else None
                traj = sample(
                    adapter,
                    cond,
                    noise,
                    schedule,
                    guidance=guidance,
                    uncond=uncond,
                    role=role,
                    return_x0=False,
                )
                lats = traj.latents
            else:
                lats, lps = sde_rollout(
                    adapter,
                    cond,
                    noise,
                    schedule,
                    sde,
                    index[s : s + batch_size],
                    role=role,
                    guidance=guidance,
                )
                lp_chunks.append(lps.cpu())
            lat_chunks.append(lats.cpu())
            if reward is not None:
                images = adapter.decode(lats[:, -1])
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
        log_probs=torch.cat(lp_chunks) if lp_chunks else None,
    )


def guided_velocity(
    adapter: Any,
    x: torch.Tensor,
    s_model: torch.Tensor,
    cond: Any,
    *,
    role: str | None,
    guidance: float,
    null: Any = None,
) -> torch.Tensor:
    """(N, C, h, w) float32 velocity of ``role`` at x, with CFG ``v_u + g (v_c - v_u)`` when g != 1.

    The one code path of an SDE rollout and of the training recomputation, so an unchanged
    policy reproduces its stored log-probs exactly. ``s_model``: (N,) sigmas told the transformer.
    ``null``: the empty prompt's conditioning, one row (default: the adapter encodes it).
    """
    if guidance == 1.0:
        return adapter.velocity(x, s_model, cond, role=role).float()
    from tdm_r1.flow import cfg as guide
    from tdm_r1.models.adapter import Conditioning

    n = x.shape[0]
    null = adapter.null_conditioning(1) if null is None else null
    both = Conditioning.cat([cond, null.repeat(n).to(cond.device)])
    out = adapter.velocity(torch.cat([x, x]), torch.cat([s_model, s_model]), both, role=role).float()
    return guide(out[:n], out[n:], guidance)


@torch.no_grad()
def sde_rollout(
    adapter: Any,
    cond: Any,
    noise: torch.Tensor,
    schedule: FlowSchedule,
    plan: SdePlan,
    index: list[int],
    *,
    role: str | None,
    guidance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler steps with the plan's steps stochastic (:func:`~tdm_r1.losses.sde.sde_step`).

    Returns (latents (N, K+1, C, h, w) float32, log_probs (N, K) float32, NaN on ODE steps). The
    noise of step k for global sample i comes from ``plan.noise_seeds(k, [i])``.
    """
    from tdm_r1.flow import euler_step
    from tdm_r1.losses.sde import sde_step
    from tdm_r1.seeds import rows_randn

    sig, msig = schedule.sigmas.float(), schedule.model_sigmas.float()
    k_steps, n = sig.numel() - 1, noise.shape[0]
    x = noise.float()
    lats, lps = [x], torch.full((n, k_steps), float("nan"))
    stochastic = set(plan.steps)
    for k in range(k_steps):
        s, s_next = float(sig[k]), float(sig[k + 1])
        if s == s_next:
            lats.append(x)
            continue
        v = guided_velocity(adapter, x, x.new_full((n,), float(msig[k])), cond, role=role, guidance=guidance)
        if k in stochastic:
            eps = rows_randn(plan.noise_seeds(k, index), tuple(x.shape[1:])).to(x.device)
            st = sde_step(
                x, s, s_next, v, eps, noise_level=plan.noise_level, kind=plan.kind, sigma_max=plan.sigma_max
            )
            x = st.next
            lps[:, k] = st.log_prob.cpu()
        else:
            x = euler_step(x, s, s_next, v)
        lats.append(x)
    return torch.stack(lats, dim=1), lps


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut
