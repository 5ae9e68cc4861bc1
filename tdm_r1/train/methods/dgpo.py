"""DGPO as a training method of the loop, applied directly to the model being improved (no surrogate).

Per epoch (DGPO, arXiv:2510.08425; Luo-Yihong/DGPO@01ceb4b ``scripts/train_sd3_dgpo.py``):
deterministic rollouts (the generator; after ``switch_ema_ref`` generator updates its fast EMA copy
``old``), with the rollout CFG; only the final samples x0 are used. M distinct grid indices are drawn
per epoch from the high-noise end ``0..trunc_steps``. For each micro-batch (whole groups) and each
index (one backward each): the members of a group share one noise; the group preference loss on the
generator's conditional denoising errors against the reference's (the starting model, or the fast EMA
with ``use_ema_ref``), PPO-style clipped against the fast EMA, + ``kl_beta`` times the velocity KL.
After each generator update the fast EMA follows with decay ``min(0.3, 0.001 step)``.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from tdm_r1.errors import ConfigError
from tdm_r1.flow import noised
from tdm_r1.losses.dgpo import denoising_errors, dgpo_loss, ema_ref_decay, train_step_indices
from tdm_r1.seeds import Stream, rows_randn
from tdm_r1.train.methods import common
from tdm_r1.train.methods.base import GEN, Batch, Loop, RoleSpec, TrainingMethod, record
from tdm_r1.train.methods.common import OLD
from tdm_r1.train.rollout import Rollout, guided_velocity

NAME = "dgpo"


class Dgpo(TrainingMethod):
    """Direct DGPO on the generator role."""

    name = NAME

    @classmethod
    def rollout_steps(cls, cfg: Any) -> int | None:
        return cfg.method.dgpo.rollout_steps

    @classmethod
    def check(cls, cfg: Any, preset: Any) -> None:
        o, g, mb = cfg.method.dgpo, cfg.rollout.group_size, cfg.method.micro_batch
        if mb % g:
            raise ConfigError(
                f"{NAME}: method.micro_batch={mb} must hold whole groups of rollout.group_size={g} "
                "(the group weight compares all members of a group); make micro_batch a multiple of group_size"
            )
        if o.beta_dpo <= 0 or o.clip_range <= 0 or o.kl_beta < 0:
            raise ConfigError(f"{NAME}: beta_dpo and clip_range must be > 0 and kl_beta >= 0")
        common.check_guidance(NAME, "method.dgpo.guidance", o.guidance, preset)
        common.check_guidance(NAME, "method.dgpo.ref_guidance", o.ref_guidance, preset)
        common.check_rollout_steps(NAME, o.rollout_steps)
        steps = o.rollout_steps or cfg.model.steps or preset.sampling.steps
        top = min(o.trunc_steps, steps - 1)
        if not 1 <= o.num_train_timesteps <= top + 1:
            raise ConfigError(
                f"{NAME}: method.dgpo.num_train_timesteps={o.num_train_timesteps} must be between 1 and the "
                f"{top + 1} grid indices 0..{top} (trunc_steps={o.trunc_steps}, {steps}-step rollout)"
            )

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        o = self.o = self.cfg.method.dgpo
        self.guidance = common.resolve_guidance(o.guidance, loop)
        self.top = min(o.trunc_steps, loop.steps - 1)
        self.ref = OLD if o.use_ema_ref else common.reference_role(loop)
        self._js: list[int] = []

    @property
    def backwards_per_micro(self) -> int:
        return self.o.num_train_timesteps

    @property
    def rollout_role(self) -> str | None:
        return OLD if self.loop.updates.get(GEN, 0) > self.o.switch_ema_ref else GEN

    @property
    def rollout_guidance(self) -> float:
        return self.guidance

    def roles(self) -> list[RoleSpec]:
        out = [common.generator_spec(self.cfg), RoleSpec(OLD, "zeros", False, copy_from=GEN)]
        if common.needs_reference_copy(self.loop):
            out.append(common.reference_spec())
        return out

    def begin_epoch(self, rollout: Rollout, adv: torch.Tensor) -> None:
        """The epoch's M grid indices (one draw per epoch, the same on every process)."""
        rng = random.Random(self.loop.seed(Stream.DGPO_T))
        self._js = train_step_indices(self.top, self.o.num_train_timesteps, rng)

    def train_micro(self, batch: Batch) -> dict[str, list[float]]:
        loop, o, a, cfg = self.loop, self.o, self.loop.adapter, self.cfg
        x0 = batch.latents[:, -1].to(loop.device)
        n, groups = x0.shape[0], batch.group.tolist()
        metrics: dict[str, list[float]] = {}
        for j in self._js:
            s = common.full(loop, n, loop.sigmas[j])
            s_model = common.full(loop, n, loop.model_sigmas[j])
            eps = rows_randn(loop.row_seeds(Stream.DGPO_EPS, (j,), groups), tuple(x0.shape[1:])).to(
                loop.device
            )
            x_t = noised(x0, s, eps)
            target = eps - x0
            with torch.no_grad():
                v_ref = guided_velocity(a, x_t, s_model, batch.cond, role=self.ref, guidance=o.ref_guidance)
                v_old = a.velocity(x_t, s_model, batch.cond, role=OLD).float()
            v = a.velocity(x_t, s_model, batch.cond, role=GEN).float()
            err, err_ref, err_old, reg = denoising_errors(target, v, v_ref, v_old)
            out = dgpo_loss(
                err,
                err_ref,
                err_old,
                reg,
                batch.adv.to(loop.device),
                batch.group.to(loop.device),
                n_groups=cfg.rollout.prompts_per_epoch,
                group_size=cfg.rollout.group_size,
                beta_dpo=o.beta_dpo,
                clip_range=o.clip_range,
                kl_beta=o.kl_beta,
                all_reduce=loop.all_reduce_sum if loop.world > 1 else None,
            )
            loop.backward(out.loss, GEN)
            rec = {
                "gen_loss": float(out.loss.detach()),
                "dgpo_group_weight": out.group_weight_mean,
                "dgpo_clipped": out.clipped_fraction,
                "kl": float(reg.detach().mean()),
            }
            record(metrics, rec)
        return metrics

    def after_update(self, role: str) -> None:
        """The fast EMA copy follows the generator: decay ``min(0.3, 0.001 step)``."""
        if role == GEN:
            common.soft_update(self.loop, OLD, GEN, ema_ref_decay(self.loop.updates[GEN]))
