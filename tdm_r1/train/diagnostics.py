"""Instruments of a TDM-R1 run (``method.diagnostics_every``): what to look at before guessing.

Per diagnostic epoch (every N-th; 0 = off) they add to ``metrics.jsonl``:

* ``sur_pairacc_j{j}``, ``sur_spearman_j{j}``: how well the surrogate ranks the samples of
  *fresh* groups (prompts and noises it never trained on, rolled out by the updated generator at
  the end of the epoch) against the true reward, per boundary j' it trains on. A sample's score
  is the quantity the DGPO loss moves: ``l_ref - l_phi``, the reference's minus the surrogate's
  denoising error at a query above boundary j' (the same renoising, target and error functions as
  the surrogate step; one query per group, as in training). Chance is 0.5 / 0. ``fresh_reward_mean``
  is the true reward of those fresh samples. ``sur_pairacc_q_j{j}`` / ``sur_spearman_q_j{j}``: the
  same with the score averaged over ``method.diagnostics_queries`` noise queries per sample: the
  surrogate's *expected* preference, which one query (a noisy estimate of it) can hide.
* ``start_delta`` (and ``start_delta_lo`` / ``_hi``, a 95% t-interval over the epoch's prompts):
  the generator's reward minus its start weights' reward on the epoch's own rollout prompts and
  initial noises, before the epoch's update: a paired learning curve at every diagnostic epoch
  (the train reward is not one: each epoch draws other prompts).
* ``gdir_kl``, ``gdir_cfg``, ``gdir_rl`` (norms), ``gdir_total``, ``gdir_{rl,cfg}_over_kl`` and
  ``gdir_cos_*``: the gradients over the generator's LoRA of the three terms of its loss, each
  with its weight in the loss (so they add up to the update's direction), on the first
  micro-batch of the epoch, per micro-batch loss (before the accumulation's division).
* ``reward_step{k}``: the true reward of the generator's x0 prediction at each step k of the
  epoch's training rollout (the weights that made the rollout).

Held-out rewards of the EMA generator (``heldout_<suite>_<metric>``) come from the scheduled
evaluation (``eval_every``; :func:`heldout_metrics`), not from this switch.

Nothing here changes training: no optimiser, gradient buffer or training stream is touched; extra
draws come from the ``DIAG_*`` streams, the global RNGs are restored after each instrument, and
prompt encodings first made by an instrument are dropped from the adapter's cache (a training
batch then encodes them itself, as without instruments).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tdm_r1.flow import x0_from_v
from tdm_r1.losses.dgpo import denoising_errors
from tdm_r1.losses.noise import renoise, sample_sigma_above, surrogate_velocity_target
from tdm_r1.losses.tdm_r1 import generator_loss
from tdm_r1.models.sampling import sample
from tdm_r1.seeds import Stream, rows_rand, rows_randn
from tdm_r1.train import checkpoint
from tdm_r1.train.diagnostic_stats import (
    direction_stats,
    paired_group_delta,
    pairwise_accuracy,
    spearman,
    term_gradients,
)
from tdm_r1.train.methods.base import GEN, Batch, Loop
from tdm_r1.train.prompts import PromptSource
from tdm_r1.train.rollout import EpochPlan, Rollout, guided_velocity, run_rollout

# ------------------------------------------------------------------------------------ held-out


def heldout_metrics(eval_dir: Path | None) -> dict[str, float]:
    """``heldout_<suite>_<metric>``: the means of a scheduled evaluation (``<eval_dir>/results``).

    The suites' prompts and seeds are fixed, so unlike the train reward (other prompts every epoch)
    these points are comparable from one evaluation to the next. None (no evaluation) gives {}.
    """
    from tdm_r1.eval.results import read_summaries

    if eval_dir is None:
        return {}
    df = read_summaries(Path(eval_dir) / "results")
    return {
        f"heldout_{row.benchmark}_{row.metric}": float(row.mean)
        for row in df.itertuples()
        if isinstance(row.mean, int | float)
    }


# ------------------------------------------------------------------------------ the instruments


@contextlib.contextmanager
def isolated(adapter: Any) -> Iterator[None]:
    """Leave no trace a later training step could see: the global RNGs and the prompt cache.

    A prompt first encoded here is dropped again, so a training batch encodes it as it would have
    (an encoding can depend in the last bits on the batch it was made in).
    """
    rng = checkpoint.rng_state()
    cache = getattr(getattr(adapter, "prompt_cache", None), "_rows", None)
    known = set(cache) if isinstance(cache, dict) else None
    try:
        yield
    finally:
        checkpoint.set_rng_state(rng)
        if known is not None:
            for key in [k for k in cache if k not in known]:
                del cache[key]


class Diagnostics:
    """The instruments of one TDM-R1 run, called from the method's hooks.

    Args:
        loop: the training loop (its adapter, schedule, reward and streams).
        every: run on epochs N, 2N, ... (1-based; the loop's 0-based ``epoch`` + 1).
        null: the empty prompt's conditioning (for a guided rollout).
        surrogate, reference: the surrogate's role and its reference's (None = the base), or
            ``surrogate=None`` without a reward.
        rollout_role, guidance: how the method rolls out.
    """

    def __init__(
        self,
        loop: Loop,
        *,
        every: int,
        null: Any,
        surrogate: str | None,
        reference: str | None,
        rollout_role: str | None = GEN,
        guidance: float = 1.0,
    ) -> None:
        self.loop, self.every, self.null = loop, every, null
        self.surrogate, self.reference = surrogate, reference
        self.rollout_role, self.guidance = rollout_role, guidance
        self.reward = getattr(loop, "reward", None)
        self.prompts = PromptSource(loop.cfg.data, seed=0)  # re-seeded per epoch from DIAG_PROMPTS
        self.queries = int(getattr(loop.cfg.method, "diagnostics_queries", 1))
        self.start: list[torch.Tensor] | None = None  # the generator's start weights (:meth:`_start`)
        self._pending: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self.every > 0 and (self.loop.epoch + 1) % self.every == 0

    # ----------------------------------------------------------------------------- hooks
    def begin_epoch(self, rollout: Rollout) -> None:
        """Before the epoch's updates: the reward of the x0 prediction at every rollout step."""
        self._pending = {}
        if self.loop.epoch == 0:
            self._start()  # copied before any update, whether or not epoch 1 is a diagnostic epoch
        if self.active and self.reward is not None:
            with isolated(self.loop.adapter):
                self._pending.update(self.step_rewards(rollout))
                if self._start() is not None:
                    self._pending.update(self.start_delta(rollout))

    def directions(
        self, batch: Batch, x0: torch.Tensor, targets: dict[str, Any], weights: dict[str, float]
    ) -> dict[str, float]:
        """The generator's three weighted loss terms' gradients on the epoch's first micro-batch."""
        if not (self.active and batch.micro == 0):
            return {}
        keys = {"kl": "w_kl", "cfg": "w_cfg", "rl": "w_rl"}
        losses: dict[str, torch.Tensor | None] = {}
        for name, key in keys.items():
            one = {k: (weights[k] if k == key else 0.0) for k in keys.values()}
            losses[name] = generator_loss(x0, **targets, **one).loss if weights[key] else None
        a = self.loop.adapter
        with isolated(a), a.use_role(GEN):  # gradient checkpointing recomputes with the generator
            grads = term_gradients(losses, a.role_parameters(GEN))
        return direction_stats(grads)

    def end_epoch(self) -> None:
        """After the epoch's last update: the surrogate's ranking on fresh groups."""
        if self.active and self.reward is not None and self.surrogate is not None:
            with isolated(self.loop.adapter):
                self._pending.update(self.surrogate_ranking())

    def take(self) -> dict[str, float]:
        """The epoch's instrument values (the direction norms travel with the micro-batch metrics)."""
        out, self._pending = self._pending, {}
        return out

    # ------------------------------------------------------------------------ instruments
    def _score(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
    ) -> torch.Tensor:
        assert self.reward is not None
        return self.reward(images=images.cpu(), prompts=prompts, metadata=metadata).scores.float().cpu()

    def _x0_images(self, ro: Rollout, sl: slice, k: int) -> torch.Tensor:
        """Decoded x0 prediction ``x_k - sigma_k v`` of the rollout's rows ``sl`` at step k (the sampler's)."""
        a, loop = self.loop.adapter, self.loop
        x = ro.latents[sl, k].to(loop.device)
        s_model = torch.full((x.shape[0],), float(loop.model_sigmas[k]), device=loop.device)
        cond = a.encode_prompts(ro.prompts[sl])
        v = guided_velocity(
            a, x, s_model, cond, role=self.rollout_role, guidance=self.guidance, null=self.null
        )
        return a.decode(x0_from_v(x, loop.sigmas[k], v))

    @torch.no_grad()
    def step_rewards(self, ro: Rollout) -> dict[str, float]:
        """``reward_step{k}``: mean true reward of the decoded x0 prediction at rollout step k.

        Summed over processes when there are several (each holds its share of the epoch). An
        Euler step to sigma 0 lands on its x0 prediction (``x - s v`` both), so the last step of
        such a schedule reuses the rollout's rewards instead of scoring the same images again.
        """
        loop = self.loop
        bs, n, k_steps = loop.cfg.rollout.batch_size, len(ro.prompts), loop.sigmas.numel() - 1
        lands = getattr(loop.schedule, "solver", None) == "euler" and float(loop.sigmas[-1]) == 0.0
        sums = torch.zeros(2 * k_steps, dtype=torch.float64)
        for k in range(k_steps):
            if float(loop.sigmas[k]) == float(loop.sigmas[k + 1]):
                continue  # a zero-length step does no work
            for s in range(0, n, bs):
                sl = slice(s, s + bs)
                if lands and k == k_steps - 1:
                    r = ro.rewards[sl].float()
                else:
                    r = self._score(self._x0_images(ro, sl, k), ro.prompts[sl], ro.metadata[sl])
                ok = torch.isfinite(r)
                sums[2 * k] += float(r[ok].sum())
                sums[2 * k + 1] += int(ok.sum())
        if loop.world > 1:
            sums = loop.all_reduce_sum(sums)
        return {
            f"reward_step{k}": float(sums[2 * k] / sums[2 * k + 1])
            for k in range(len(sums) // 2)
            if sums[2 * k + 1] > 0
        }

    def _start(self) -> list[torch.Tensor] | None:
        """The generator's weights before its first update: copied at epoch 0 and kept in the run
        folder (``diagnostics_start.pt``) for a resumed run; None for a method that does not roll
        out its generator, or a run resumed without that file."""
        if self.start is None and self.rollout_role == GEN:
            path = Path(self.loop.run_dir) / "diagnostics_start.pt"
            if self.loop.epoch == 0:
                self.start = self.loop.adapter.get_role_state(GEN, device="cpu")
                if getattr(self.loop, "rank", 0) == 0:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(self.start, path)
            elif path.is_file():
                self.start = torch.load(path, map_location="cpu", weights_only=True)
        return self.start

    @torch.no_grad()
    def start_delta(self, ro: Rollout) -> dict[str, float]:
        """``start_delta``: rollout reward minus the start weights' on the same prompts and noises.

        The start weights are copied into the generator for the replay and the current ones back
        (exact copies), so training continues from the same weights. The interval is a t-interval
        over the epoch's prompts (per-prompt mean differences), this process's share.
        """
        loop, a = self.loop, self.loop.adapter
        assert self.start is not None
        now = a.get_role_state(GEN, device="cpu")
        bs, n = loop.cfg.rollout.batch_size, len(ro.prompts)
        base = []
        a.set_role_weights(GEN, self.start, source="the start weights")
        try:
            for s in range(0, n, bs):
                sl = slice(s, s + bs)
                cond = a.encode_prompts(ro.prompts[sl])
                uncond = a.null_conditioning(len(cond)) if self.guidance != 1.0 else None
                traj = sample(
                    a,
                    cond,
                    ro.latents[sl, 0].to(loop.device),
                    loop.schedule,
                    guidance=self.guidance,
                    uncond=uncond,
                    role=GEN,
                    return_x0=False,
                )
                base.append(self._score(a.decode(traj.latents[:, -1]), ro.prompts[sl], ro.metadata[sl]))
        finally:
            a.set_role_weights(GEN, now, source="the current weights")
        return paired_group_delta(ro.rewards.float(), torch.cat(base), ro.group, prefix="start_delta")

    def fresh_rollout(self) -> Rollout:
        """The updated generator's samples of ``prompts_per_epoch`` fresh groups (every process: all)."""
        loop, cfg = self.loop, self.loop.cfg
        self.prompts.set_state(random.Random(loop.seed(Stream.DIAG_PROMPTS)).getstate())
        n = cfg.samples_per_epoch
        plan = EpochPlan(
            prompts=self.prompts.sample(cfg.rollout.prompts_per_epoch),
            order=list(range(n)),
            local=list(range(n)),
        )
        return run_rollout(
            loop.adapter,
            loop.schedule,
            plan,
            group_size=cfg.rollout.group_size,
            batch_size=cfg.rollout.batch_size,
            noise_seeds=lambda index: loop.row_seeds(Stream.DIAG_NOISE, (), index),
            device=loop.device,
            reward=self.reward,
            async_rewards=False,
            role=self.rollout_role,
            guidance=self.guidance,
        )

    @torch.no_grad()
    def surrogate_scores(
        self, lat: torch.Tensor, cond: Any, groups: torch.Tensor, j: int, q: int = 0
    ) -> torch.Tensor:
        """(n,) ``l_ref - l_phi`` at a query above boundary j' (``lat``: (n, K+1, C, h, w)).

        The surrogate step's query (:meth:`TdmR1._surrogate_errors`) with j' given: the post-step
        latent of j', one noise level (>= ``t_min_dgpo_reward``) and one noise per group; query
        ``q`` > 0 draws another level and noise.
        """
        loop, m = self.loop, self.loop.cfg.method
        a, n = loop.adapter, lat.shape[0]
        x_n = lat[:, j + 1].to(loop.device)
        s_n = torch.full((n,), float(loop.sigmas[j + 1]))
        gl = groups.tolist()
        keys = (j,) if q == 0 else (j, q)
        u = rows_rand(loop.row_seeds(Stream.DIAG_TAU, keys, gl))
        s_tau = sample_sigma_above(s_n, t_min=m.t_min_dgpo_reward, shift=loop.shift, margin=m.margin, u=u)
        eps = rows_randn(loop.row_seeds(Stream.DIAG_EPS, keys, gl), tuple(x_n.shape[1:]))
        eps, s_n, s_tau = eps.to(loop.device), s_n.to(loop.device), s_tau.to(loop.device)
        x_tau, alpha, beta = renoise(x_n, s_n, s_tau, eps)
        target = surrogate_velocity_target(x_n, s_n, s_tau, eps, alpha, beta)
        v_ref = a.velocity(x_tau, s_tau, cond, role=self.reference).float()
        v_phi = a.velocity(x_tau, s_tau, cond, role=self.surrogate).float()
        l_phi, l_ref, _, _ = denoising_errors(target, v_phi, v_ref)
        return (l_ref - l_phi).cpu()

    def surrogate_ranking(self) -> dict[str, float]:
        """``sur_pairacc_j{j}`` / ``sur_spearman_j{j}`` on fresh groups, and their ``fresh_reward_mean``."""
        loop = self.loop
        ro = self.fresh_rollout()
        chunk = max(1, loop.cfg.method.micro_batch // loop.world)
        conds = [
            loop.adapter.encode_prompts(ro.prompts[s : s + chunk]) for s in range(0, len(ro.prompts), chunk)
        ]
        finite = ro.rewards[torch.isfinite(ro.rewards)]
        out = {"fresh_reward_mean": float(finite.mean()) if len(finite) else float("nan")}
        starts = range(0, len(ro.prompts), chunk)
        for j in loop.train_steps:
            per_query = [
                torch.cat(
                    [
                        self.surrogate_scores(ro.latents[s : s + chunk], cond, ro.group[s : s + chunk], j, q)
                        for s, cond in zip(starts, conds, strict=True)
                    ]
                )
                for q in range(self.queries)
            ]
            for tag, scores in (("", per_query[0]), ("q_", torch.stack(per_query).mean(0))):
                out[f"sur_pairacc_{tag}j{j}"] = pairwise_accuracy(scores, ro.rewards, ro.group)
                out[f"sur_spearman_{tag}j{j}"] = spearman(scores, ro.rewards, ro.group)
        return out
