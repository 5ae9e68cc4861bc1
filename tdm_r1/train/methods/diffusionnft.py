"""DiffusionNFT as a training method of the loop: forward-process, reward-weighted flow matching.

Per epoch (DiffusionNFT, arXiv:2509.16117; NVlabs/DiffusionNFT@24af555 ``scripts/train_nft_sd3.py``):
the frozen ``old`` copy samples CFG-free ODE rollouts with the schedule's own solver (any sampler);
only the final samples x0 are used. For each micro-batch, each sample draws
``int(K * timestep_fraction)`` of the rollout grid's sigmas (a per-sample permutation) with fresh
noise per level; per level one backward of the NFT loss (positive / negative implicit policies around the old
velocity, weighted by the optimality probability r from the advantage, + ``kl_beta`` times the
velocity KL to the starting model). After the epoch the old copy moves toward the generator by the
public decay schedule.
"""

from __future__ import annotations

from typing import Any

import torch

from tdm_r1.errors import ConfigError
from tdm_r1.flow import noised
from tdm_r1.losses.diffusionnft import diffusionnft_loss, old_policy_decay, optimality_probability
from tdm_r1.seeds import Stream, generator, rows_randn
from tdm_r1.train.methods import common
from tdm_r1.train.methods.base import GEN, Batch, Loop, RoleSpec, TrainingMethod, record
from tdm_r1.train.methods.common import OLD

NAME = "diffusionnft"


class DiffusionNft(TrainingMethod):
    """DiffusionNFT on the generator role, sampled by its lagging ``old`` copy."""

    name = NAME

    @classmethod
    def rollout_steps(cls, cfg: Any) -> int | None:
        return cfg.method.diffusionnft.rollout_steps

    @classmethod
    def check(cls, cfg: Any, preset: Any) -> None:
        o = cfg.method.diffusionnft
        if o.beta <= 0 or o.kl_beta < 0:
            raise ConfigError(
                f"{NAME}: method.diffusionnft.beta must be > 0 and kl_beta >= 0, got {o.beta}, {o.kl_beta}"
            )
        if o.decay_type not in (1, 2):
            raise ConfigError(f"{NAME}: method.diffusionnft.decay_type must be 1 or 2, got {o.decay_type}")
        common.check_rollout_steps(NAME, o.rollout_steps)
        common.check_fraction(NAME, "method.diffusionnft.timestep_fraction", o.timestep_fraction)
        steps = o.rollout_steps or cfg.model.steps or preset.sampling.steps
        if int(steps * o.timestep_fraction) < 1:
            raise ConfigError(
                f"{NAME}: timestep_fraction={o.timestep_fraction} trains no noise level of the {steps}-step grid"
            )

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        self.o = self.cfg.method.diffusionnft
        #: training noise levels: the rollout grid's non-zero sigmas
        self.levels = [j for j in range(loop.steps) if float(loop.sigmas[j]) > 0]
        self.n_levels = int(len(self.levels) * self.o.timestep_fraction)
        if self.n_levels < 1:
            raise ConfigError(f"{NAME}: no noise level of the grid {loop.sigmas.tolist()} to train on")
        self.ref = common.reference_role(loop) if self.o.kl_beta else None
        self._adv: torch.Tensor | None = None

    @property
    def backwards_per_micro(self) -> int:
        return self.n_levels

    @property
    def rollout_role(self) -> str | None:
        return OLD

    def roles(self) -> list[RoleSpec]:
        out = [common.generator_spec(self.cfg), RoleSpec(OLD, "zeros", False, copy_from=GEN)]
        if self.o.kl_beta and common.needs_reference_copy(self.loop):
            out.append(common.reference_spec())
        return out

    def train_micro(self, batch: Batch) -> dict[str, list[float]]:
        loop, o, a = self.loop, self.o, self.loop.adapter
        keys = batch.sample_keys
        x0 = batch.latents[:, -1].to(loop.device)
        perms = torch.stack(
            [
                torch.randperm(len(self.levels), generator=generator(s))
                for s in loop.row_seeds(Stream.NFT_T, (), keys)
            ]
        )
        levels = torch.tensor(self.levels)
        r = optimality_probability(batch.adv, self.cfg.method.adv_clip).to(loop.device)
        metrics: dict[str, list[float]] = {}
        for q in range(self.n_levels):
            js = levels[perms[:, q]]
            sigma = loop.sigmas[js].to(loop.device)  # (n,)
            s_model = loop.model_sigmas[js].to(loop.device)
            eps = rows_randn(loop.row_seeds(Stream.NFT_EPS, (q,), keys), tuple(x0.shape[1:])).to(loop.device)
            x_t = noised(x0, sigma, eps)
            with torch.no_grad():
                v_old = a.velocity(x_t, s_model, batch.cond, role=OLD).float()
                v_ref = a.velocity(x_t, s_model, batch.cond, role=self.ref).float() if o.kl_beta else None
            v = a.velocity(x_t, s_model, batch.cond, role=GEN).float()
            out = diffusionnft_loss(
                v,
                v_old,
                x_t,
                sigma,
                x0,
                r,
                beta=o.beta,
                adv_clip=self.cfg.method.adv_clip,
                v_ref=v_ref,
                kl_beta=o.kl_beta,
            )
            loop.backward(out.loss, GEN)
            rec = {
                "gen_loss": float(out.loss.detach()),
                "policy_loss": out.policy,
                "nft_positive": out.positive,
                "nft_negative": out.negative,
                "kl": out.kl,
                "old_deviate": out.old_deviate,
            }
            record(metrics, rec)
        return metrics

    def end_epoch(self) -> None:
        """The sampling copy: ``old <- d old + (1 - d) generator`` with the public decay (d ~ 0 early)."""
        d = old_policy_decay(self.loop.updates[GEN], self.o.decay_type)
        common.soft_update(self.loop, OLD, GEN, d)
