"""Flow-GRPO as a training method of the loop: SDE rollouts, clipped likelihood ratios, KL to the start.

Per epoch (Flow-GRPO, arXiv:2505.05470; yifan123/flow_grpo@ac4c86e ``scripts/train_sd3.py``): the
generator samples with the SDE on the stochastic steps (all but the last for full Flow-GRPO, a seeded
window of consecutive steps for Flow-GRPO-Fast; the others are Euler ODE steps), storing every latent
and each stochastic step's log-probability. Rewards give group advantages. For each micro-batch and
each stochastic step k (one backward per step): the stored transition's log-probability under the
current weights, the clipped ratio loss against the stored one, and ``beta_kl`` times the KL of the
step means to the starting model. With CFG (guidance != 1) the policy is the guided step, in rollout
and training.

"Denoising reduction": ``method.flow_grpo.rollout_steps`` (e.g. 10 on the 50-step toy teacher)
sets the training rollout; the exported model samples with the model's own steps.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from tdm_r1.errors import ConfigError
from tdm_r1.losses.flow_grpo import flow_grpo_loss
from tdm_r1.losses.flow_grpo import train_steps as grpo_train_steps
from tdm_r1.losses.sde import SDE_KINDS, kl_scale, step_log_prob
from tdm_r1.seeds import Stream
from tdm_r1.train.methods import common
from tdm_r1.train.methods.base import GEN, Batch, Loop, RoleSpec, TrainingMethod, record
from tdm_r1.train.rollout import Rollout, SdePlan, guided_velocity

NAME = "flow-grpo"


def _window_range(o: Any, steps: int) -> tuple[int, int]:
    return (o.sde_window_range[0], o.sde_window_range[1]) if o.sde_window_range else (0, steps)


class FlowGrpo(TrainingMethod):
    """Flow-GRPO (and Flow-GRPO-Fast with ``sde_window > 0``) on the generator role."""

    name = NAME
    rollout_kind = "sde"

    @classmethod
    def rollout_steps(cls, cfg: Any) -> int | None:
        return cfg.method.flow_grpo.rollout_steps

    @classmethod
    def check(cls, cfg: Any, preset: Any) -> None:
        o = cfg.method.flow_grpo
        if o.sde not in SDE_KINDS:
            raise ConfigError(
                f"{NAME}: method.flow_grpo.sde must be one of {', '.join(SDE_KINDS)}, got {o.sde!r}"
            )
        if o.noise_level <= 0 or o.clip_range <= 0 or o.beta_kl < 0:
            raise ConfigError(
                f"{NAME}: noise_level and clip_range must be > 0 and beta_kl >= 0, got "
                f"{o.noise_level}, {o.clip_range}, {o.beta_kl}"
            )
        if preset.sampling.solver != "euler":
            raise ConfigError(
                f"{NAME}: the SDE rollout is an Euler-Maruyama step on the flow sigmas, but model {preset.name!r} "
                f"samples with the {preset.sampling.solver} solver; use a model with an Euler flow schedule "
                "(or diffusionnft / dgpo, which take any sampler)"
            )
        common.check_guidance(NAME, "method.flow_grpo.guidance", o.guidance, preset)
        common.check_rollout_steps(NAME, o.rollout_steps)
        common.check_fraction(NAME, "method.flow_grpo.timestep_fraction", o.timestep_fraction)
        steps = o.rollout_steps or cfg.model.steps or preset.sampling.steps
        if o.sde_window < 0:
            raise ConfigError(
                f"{NAME}: method.flow_grpo.sde_window must be >= 0 (0 = full), got {o.sde_window}"
            )
        if o.sde_window:
            if o.sde_window_range is not None and len(o.sde_window_range) != 2:
                raise ConfigError(
                    f"{NAME}: method.flow_grpo.sde_window_range must be [lo, hi], got {o.sde_window_range}"
                )
            lo, hi = _window_range(o, steps)
            if not (lo >= 0 and hi <= steps and hi - lo >= o.sde_window):
                raise ConfigError(
                    f"{NAME}: an SDE window of {o.sde_window} steps does not fit in steps [{lo}, {hi}) of the "
                    f"{steps}-step rollout; change method.flow_grpo.sde_window or sde_window_range"
                )
        elif int(steps * o.timestep_fraction) < 1:
            raise ConfigError(
                f"{NAME}: timestep_fraction={o.timestep_fraction} trains no step of the {steps}-step rollout"
            )

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        o = self.o = self.cfg.method.flow_grpo
        self.guidance = common.resolve_guidance(o.guidance, loop)
        k = loop.steps
        if o.sde_window:
            lo, hi = _window_range(o, k)
            candidates = list(range(lo, hi))
        else:
            candidates = grpo_train_steps(k, timestep_fraction=o.timestep_fraction)
        short = [j for j in candidates if j not in loop.train_steps]
        if short:
            raise ConfigError(
                f"{NAME}: stochastic steps {short} of the schedule {[round(float(x), 4) for x in loop.sigmas]} are "
                f"shorter than method.min_step: an SDE step there has (almost) no noise and its log-prob "
                "overflows; lower timestep_fraction or move the sde_window_range"
            )
        self.n_train = o.sde_window or len(candidates)
        self.ref = common.reference_role(loop) if o.beta_kl else None
        self.sigma_max = float(loop.sigmas[1]) if o.sde == "flow" else None
        self._steps: list[int] = candidates
        self._log_probs: torch.Tensor | None = None

    @property
    def backwards_per_micro(self) -> int:
        return self.n_train

    @property
    def rollout_guidance(self) -> float:
        return self.guidance

    def roles(self) -> list[RoleSpec]:
        out = [common.generator_spec(self.cfg)]
        if self.o.beta_kl and common.needs_reference_copy(self.loop):
            out.append(common.reference_spec())
        return out

    def sde_plan(self) -> SdePlan:
        """The epoch's stochastic steps (Fast: the window start is drawn per epoch) and noise seeds."""
        o, loop = self.o, self.loop
        if o.sde_window:
            rng = random.Random(loop.seed(Stream.SDE_WINDOW))
            self._steps = grpo_train_steps(
                loop.steps, window=o.sde_window, window_range=_window_range(o, loop.steps), rng=rng
            )
        return SdePlan(
            steps=tuple(self._steps),
            noise_level=o.noise_level,
            kind=o.sde,
            sigma_max=self.sigma_max,
            noise_seeds=lambda k, index: loop.row_seeds(Stream.SDE, (k,), index),
        )

    def begin_epoch(self, rollout: Rollout, adv: torch.Tensor) -> None:
        assert rollout.log_probs is not None, "flow-grpo needs an SDE rollout"
        self._log_probs = rollout.log_probs

    def step_log_prob(
        self, batch: Batch, k: int, role: str | None = GEN
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log_prob (n,), mean (n, C, h, w)) of the stored transition k under ``role`` (grad if enabled)."""
        loop, o = self.loop, self.o
        lat = batch.latents
        x, x_next = lat[:, k].to(loop.device), lat[:, k + 1].to(loop.device)
        s, s_next = float(loop.sigmas[k]), float(loop.sigmas[k + 1])
        s_model = common.full(loop, x.shape[0], loop.model_sigmas[k])
        v = guided_velocity(loop.adapter, x, s_model, batch.cond, role=role, guidance=self.guidance)
        return step_log_prob(
            x, x_next, s, s_next, v, noise_level=o.noise_level, kind=o.sde, sigma_max=self.sigma_max
        )

    def train_micro(self, batch: Batch) -> dict[str, list[float]]:
        """One backward per stochastic step: clipped ratio loss (+ beta_kl KL to the starting model)."""
        assert self._log_probs is not None, "begin_epoch first"
        loop, o = self.loop, self.o
        old = self._log_probs[batch.rows]
        metrics: dict[str, list[float]] = {}
        for k in self._steps:
            lp, mean = self.step_log_prob(batch, k)
            ref_mean = None
            if o.beta_kl:
                with torch.no_grad():
                    _, ref_mean = self.step_log_prob(batch, k, role=self.ref)
            s, s_next = float(loop.sigmas[k]), float(loop.sigmas[k + 1])
            out = flow_grpo_loss(
                lp,
                old[:, k].to(lp.device),
                batch.adv,
                clip_range=o.clip_range,
                beta_kl=o.beta_kl,
                mean=mean,
                ref_mean=ref_mean,
                kl_scale=kl_scale(o.sde, s, s_next, o.noise_level, self.sigma_max),
            )
            loop.backward(out.loss, GEN)
            rec = {
                "gen_loss": float(out.loss.detach()),
                "policy_loss": out.policy,
                "kl": out.kl,
                "approx_kl": out.approx_kl,
                "clipfrac": out.clipfrac,
                "ratio_mean": out.ratio_mean,
            }
            record(metrics, rec)
        return metrics
