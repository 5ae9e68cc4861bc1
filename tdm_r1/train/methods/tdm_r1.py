"""TDM-R1 (and TDM distillation, its reward-free case) as a training method of the loop.

Roles on the one frozen base transformer: ``generator`` (the few-step student), ``fake`` (TDM's fake
score), ``surrogate`` (the learned reward model) plus frozen copies: ``surrogate_old`` (a fast EMA of
the surrogate for the PPO-style clip) and ``reference`` (with the dynamic EMA reference). The base
itself (adapters off) is the teacher and the frozen reference. For each micro-batch and each drawn
boundary j (as one epoch of Luo-Yihong/TDM-R1 ``scripts/train_tdmr1_pub.py`` @ 1ee7d9f does): a
fake-score step, a surrogate step (DGPO on the surrogate) and a generator step (reverse KL + CFG
reward + surrogate reward). Without a reward the surrogate disappears: that is TDM distillation.
"""

from __future__ import annotations

from typing import Any

import torch

from tdm_r1.flow import cfg as guide
from tdm_r1.flow import euler_step, x0_from_v
from tdm_r1.losses.dgpo import denoising_errors
from tdm_r1.losses.noise import renoise, sample_sigma_above, surrogate_velocity_target
from tdm_r1.losses.tdm_r1 import fake_score_loss, generator_loss, group_preference_sums, surrogate_loss
from tdm_r1.seeds import Stream, generator, rows_rand, rows_randn
from tdm_r1.train.diagnostics import Diagnostics
from tdm_r1.train.methods import common
from tdm_r1.train.methods.base import GEN, Batch, Loop, RoleSpec, TrainingMethod, record
from tdm_r1.train.rollout import Rollout, guided_velocity

FAKE, SUR, OLD, REF = "fake", "surrogate", "surrogate_old", "reference"


class TdmR1(TrainingMethod):
    """TDM-R1: surrogate reward learning + generator learning along the deterministic trajectory."""

    name = "tdm-r1"

    def __init__(self, loop: Loop, null: Any = None) -> None:
        """``null``: the empty prompt's conditioning (default: the adapter encodes it)."""
        super().__init__(loop)
        self.null = loop.adapter.null_conditioning(1) if null is None else null
        self._rollout: Rollout | None = None
        self._adv: torch.Tensor | None = None
        self._sums: dict[int, torch.Tensor] = {}
        m = self.cfg.method  # the instruments (method.diagnostics_every; off = None)
        self.diag: Diagnostics | None = None
        if m.diagnostics_every:
            sur, ref = (SUR, REF if m.reference == "ema" else None) if self.uses_reward else (None, None)
            self.diag = Diagnostics(
                loop, every=m.diagnostics_every, null=self.null, surrogate=sur, reference=ref
            )

    @property
    def backwards_per_micro(self) -> int:
        return self.cfg.method.num_train_timesteps

    def roles(self) -> list[RoleSpec]:
        o, m = self.cfg.optim, self.cfg.method
        out = [
            RoleSpec(
                GEN, self.cfg.model.generator_init, True, o.generator_lr_scale, tuple(o.generator_betas)
            ),
            RoleSpec(FAKE, "zeros", True, o.fake_lr_scale, tuple(o.fake_betas)),
        ]
        if self.uses_reward:
            out.append(RoleSpec(SUR, "zeros", True, o.surrogate_lr_scale, tuple(o.surrogate_betas)))
            out.append(RoleSpec(OLD, "zeros", False, copy_from=SUR))
            if m.reference == "ema":
                out.append(RoleSpec(REF, "zeros", False, copy_from=SUR))
        return out

    # ----------------------------------------------------------------------------- the epoch
    def begin_epoch(self, rollout: Rollout, adv: torch.Tensor) -> None:
        self._rollout, self._adv, self._sums = rollout, adv, {}
        if self.diag is not None:
            self.diag.begin_epoch(rollout)

    def end_epoch(self) -> None:
        if self.diag is not None:
            self.diag.end_epoch()

    def epoch_metrics(self) -> dict[str, float]:
        return self.diag.take() if self.diag is not None else {}

    def train_micro(self, batch: Batch) -> dict[str, list[float]]:
        """Per drawn boundary j: fake step, surrogate step (with a reward), generator step.

        The boundaries are drawn per block; at a block's first micro-batch, a group larger than
        a micro-batch is scored whole first (:meth:`block_group_sums`).
        """
        loop, cfg = self.loop, self.cfg
        valid, per = loop.train_steps, cfg.method.micro_batch // loop.world
        draw = generator(loop.seed(Stream.BOUNDS, batch.block))
        picks = torch.randperm(len(valid), generator=draw)[: cfg.method.num_train_timesteps].tolist()
        js = [valid[i] for i in picks]
        mpb = cfg.micro_per_block
        if mpb > 1 and batch.micro % mpb == 0 and self.uses_reward:
            pieces = [slice(q * per, (q + 1) * per) for q in range(batch.micro, batch.micro + mpb)]
            self._sums = {jn: self.block_group_sums(pieces, batch.block, jn) for jn in range(len(js))}
        metrics: dict[str, list[float]] = {}
        for jn, j in enumerate(js):
            rec: dict[str, float] = {"fake_loss": self.fake_step(batch, j)}
            if self.uses_reward:
                rec.update(self.surrogate_step(batch, jn, self._sums.get(jn)))
            rec.update(self.generator_step(batch, j))
            record(metrics, rec)
        return metrics

    # ------------------------------------------------------------------------------- queries
    def _boundary(self, lat: torch.Tensor, j: int) -> tuple[torch.Tensor, ...]:
        """x_t (n,C,h,w) at boundary j and (n,) sigma_t, sigma_next, the transformer's sigma."""
        loop, n = self.loop, lat.shape[0]
        x_t = lat[:, j].to(loop.device)
        sig = (loop.sigmas[j], loop.sigmas[j + 1], loop.model_sigmas[j])
        return x_t, *(common.full(loop, n, v) for v in sig)

    def _kl_query(self, batch: Batch, j: int, sigma_n: torch.Tensor, shape: tuple[int, ...]):
        """Noise level and noise of the fake / KL query for boundary j (shared by both steps)."""
        loop, keys = self.loop, batch.sample_keys
        u = rows_rand(loop.row_seeds(Stream.TAU, (batch.micro, j), keys))
        s_tau = sample_sigma_above(
            sigma_n.cpu(), t_min=0.0, shift=loop.shift, margin=self.cfg.method.margin, u=u
        )
        eps = rows_randn(loop.row_seeds(Stream.EPS, (batch.micro, j), keys), shape)
        return s_tau.to(loop.device), eps.to(loop.device)

    def _with_null(self, cond: Any, n: int) -> Any:
        from tdm_r1.models.adapter import Conditioning

        return Conditioning.cat([cond, self.null.repeat(n).to(cond.device)])

    def _teacher_x0(self, x: torch.Tensor, s: torch.Tensor, cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond_x0, uncond_x0) of the frozen base at x (N,C,h,w), sigma s (N,)."""
        n = x.shape[0]
        both = self._with_null(cond, n)
        v = self.loop.adapter.velocity(torch.cat([x, x]), torch.cat([s, s]), both, role=None).float()
        x0 = x0_from_v(torch.cat([x, x]), s.repeat(2), v)
        return x0[:n], x0[n:]

    def _guided_x0(self, role: str | None, x: torch.Tensor, s: torch.Tensor, cond: Any, scale: float):
        v = guided_velocity(self.loop.adapter, x, s, cond, role=role, guidance=scale, null=self.null)
        return x0_from_v(x, s, v)

    # --------------------------------------------------------------------------------- steps
    def fake_step(self, batch: Batch, j: int) -> float:
        a, m, loop = self.loop.adapter, self.cfg.method, self.loop
        x_t, s_t, s_n, s_model = self._boundary(batch.latents, j)
        with torch.no_grad():
            v = a.velocity(x_t, s_model, batch.cond, role=GEN).float()
            x0, x_next = x0_from_v(x_t, s_t, v), euler_step(x_t, s_t, s_n, v)
        s_tau, eps = self._kl_query(batch, j, s_n, tuple(x_t.shape[1:]))
        x_tau, _, _ = renoise(x_next, s_n, s_tau, eps)
        with torch.no_grad():
            v_real = a.velocity(x_tau, s_tau, batch.cond, role=None).float() if m.fake_anchor else None
        v_fake = a.velocity(x_tau, s_tau, batch.cond, role=FAKE).float()
        loss = fake_score_loss(
            v_fake, x_tau=x_tau, x0_gen=x0, sigma_tau=s_tau, v_real=v_real, anchor=m.fake_anchor
        )
        loop.backward(loss, FAKE)
        return float(loss.detach())

    def _surrogate_errors(
        self, lat: torch.Tensor, cond: Any, groups: torch.Tensor, blk: int, j_draw: int
    ) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample denoising errors of the surrogate, the reference and the fast-EMA copy.

        The query is shared by a group: the stored post-step latent of boundary j' (drawn per block
        with probability ~ j'+1 among the trainable steps), one noise level and one noise per group
        (seeds keyed by block and global group index), so the group's common error cancels in the
        preference sum. Returns j' and (l_phi with grad, l_ref, l_old, reg with grad), each (n,).
        """
        loop, m = self.loop, self.cfg.method
        a, valid = loop.adapter, loop.train_steps
        probs = torch.tensor([j + 1 for j in valid], dtype=torch.float64)
        gen = generator(loop.seed(Stream.SUR_J, blk, j_draw))
        j = valid[int(torch.multinomial(probs / probs.sum(), 1, generator=gen))]
        n = lat.shape[0]
        x_n = lat[:, j + 1].to(loop.device)
        s_n = torch.full((n,), float(loop.sigmas[j + 1]))
        gl = groups.tolist()
        u = rows_rand(loop.row_seeds(Stream.SUR_TAU, (blk, j_draw), gl))
        s_tau = sample_sigma_above(s_n, t_min=m.t_min_dgpo_reward, shift=loop.shift, margin=m.margin, u=u)
        eps = rows_randn(loop.row_seeds(Stream.SUR_EPS, (blk, j_draw), gl), tuple(x_n.shape[1:]))
        eps, s_n, s_tau = eps.to(loop.device), s_n.to(loop.device), s_tau.to(loop.device)
        x_tau, alpha, beta = renoise(x_n, s_n, s_tau, eps)
        target = surrogate_velocity_target(x_n, s_n, s_tau, eps, alpha, beta)
        with torch.no_grad():
            v_ref = a.velocity(x_tau, s_tau, cond, role=REF if m.reference == "ema" else None).float()
            v_old = a.velocity(x_tau, s_tau, cond, role=OLD).float()
        v_phi = a.velocity(x_tau, s_tau, cond, role=SUR).float()
        return j, *denoising_errors(target, v_phi, v_ref, v_old)

    @torch.no_grad()
    def block_group_sums(self, slices: list[slice], blk: int, j_draw: int) -> torch.Tensor:
        """(P,) float64 sums ``sum_{i in g} A_i (l_phi_i - l_ref_i)`` over a block's micro-batches.

        Used when a group is larger than a micro-batch: the group weight needs the whole group, so
        the pieces are first scored without gradient (the surrogate does not change inside a block:
        ``optim.grad_accum`` is a multiple of the block length), then trained piece by piece.
        """
        ro, adv, n_groups = self._rollout, self._adv, self.cfg.rollout.prompts_per_epoch
        assert ro is not None and adv is not None, "begin_epoch first"
        total = torch.zeros(n_groups, dtype=torch.float64)
        for sl in slices:
            cond = self.loop.adapter.encode_prompts(ro.prompts[sl])
            _, l_phi, l_ref, _, _ = self._surrogate_errors(ro.latents[sl], cond, ro.group[sl], blk, j_draw)
            total += group_preference_sums(adv[sl], l_phi.cpu(), l_ref.cpu(), ro.group[sl], n_groups)
        return self.loop.all_reduce_sum(total) if self.loop.world > 1 else total

    def surrogate_step(
        self, batch: Batch, j_draw: int, group_sum: torch.Tensor | None = None
    ) -> dict[str, float]:
        """DGPO step of the surrogate on one micro-batch (whole groups, or a block's piece + ``group_sum``)."""
        loop, m, cfg = self.loop, self.cfg.method, self.cfg
        j, l_phi, l_ref, l_old, reg = self._surrogate_errors(
            batch.latents, batch.cond, batch.group, batch.block, j_draw
        )
        out = surrogate_loss(
            l_phi,
            l_ref,
            l_old,
            reg,
            batch.adv.to(loop.device),
            batch.group.to(loop.device),
            n_groups=cfg.rollout.prompts_per_epoch,
            group_size=cfg.rollout.group_size,
            beta_dpo=m.beta_dpo,
            clip_range=m.clip_range,
            reg_threshold=m.reg_threshold,
            anchor_beta=m.anchor_beta,
            time_weight=(j + 1) / loop.steps if m.use_tweight else 1.0,
            all_reduce=loop.all_reduce_sum if loop.world > 1 else None,
            group_sum=None if group_sum is None else group_sum.to(loop.device),
        )
        loop.backward(out.loss, SUR)
        return {
            "surrogate_loss": float(out.loss.detach()),
            "surrogate_group_weight": out.group_weight_mean,
            "surrogate_group_weight_std": out.group_weight_std,
            "surrogate_clipped": out.clipped_fraction,
            "surrogate_drift": out.drift,
        }

    def generator_step(self, batch: Batch, j: int) -> dict[str, float]:
        """Generator step at boundary j; the surrogate's reward query is shared by a group (keyed by block)."""
        loop, m = self.loop, self.cfg.method
        a, cond = loop.adapter, batch.cond
        x_t, s_t, s_n, s_model = self._boundary(batch.latents, j)
        v = a.velocity(x_t, s_model, cond, role=GEN).float()
        x0 = x0_from_v(x_t, s_t, v)
        x_next = euler_step(x_t, s_t, s_n, v).detach()
        s_tau, eps = self._kl_query(batch, j, s_n, tuple(x_t.shape[1:]))
        x_tau, _, _ = renoise(x_next, s_n, s_tau, eps)
        rl = self.uses_reward and j < m.trunc_steps
        # ablation (method.surrogate_term=false): same rollouts, rewards and surrogate training, and
        # the same KL/CFG weights, but the generator never receives the surrogate's reward direction
        with torch.no_grad():
            fake_x0 = x0_from_v(x_tau, s_tau, a.velocity(x_tau, s_tau, cond, role=FAKE).float())
            cond_x0, uncond_x0 = self._teacher_x0(x_tau, s_tau, cond)
            guided_x0 = guide(cond_x0, uncond_x0, m.teacher_cfg)
            sur_x0 = ref_x0 = None
            if rl and m.surrogate_term:
                gl = batch.group.tolist()
                u = rows_rand(loop.row_seeds(Stream.RL_TAU, (batch.block, j), gl))
                s_r = sample_sigma_above(
                    s_n.cpu(), t_min=m.t_min_dgpo, shift=loop.shift, margin=m.margin, u=u
                )
                s_r = s_r.to(loop.device)
                eps_r = rows_randn(loop.row_seeds(Stream.RL_EPS, (batch.block, j), gl), tuple(x_t.shape[1:]))
                x_r, _, _ = renoise(x_next, s_n, s_r, eps_r.to(loop.device))
                sur_x0 = self._guided_x0(SUR, x_r, s_r, cond, m.rl_cfg)
                ref_x0 = self._guided_x0(REF if m.reference == "ema" else None, x_r, s_r, cond, 1.0)
        if not self.uses_reward:
            w = dict(w_kl=m.distill_kl_weight, w_cfg=m.distill_cfg_weight, w_rl=0.0)
        elif rl:
            w = dict(w_kl=1.0, w_cfg=m.tdm_weight, w_rl=(1.0 - m.tdm_weight) if m.surrogate_term else 0.0)
        else:
            w = dict(w_kl=m.tdm_weight, w_cfg=m.tdm_weight, w_rl=0.0)
        targets = dict(
            cond_x0=cond_x0,
            uncond_x0=uncond_x0,
            fake_x0=fake_x0,
            guided_x0=guided_x0,
            cfg_reward_scale=m.cfg_reward_scale,
            surrogate_x0=sur_x0,
            ref_x0=ref_x0,
        )
        out = generator_loss(x0, **targets, **w)
        probe = self.diag.directions(batch, x0, targets, w) if self.diag is not None else {}
        loop.backward(out.loss, GEN)
        return {
            "gen_loss": float(out.loss.detach()),
            "gen_kl": out.kl,
            "gen_cfg": out.cfg,
            "gen_rl": out.rl,
            **probe,
        }

    # ------------------------------------------------------------------------------- copies
    @torch.no_grad()
    def after_update(self, role: str) -> None:
        """After a surrogate update: the fast EMA copy (and the EMA reference) follow it."""
        if role != SUR:
            return
        m = self.cfg.method
        # n = surrogate updates before this one (the trainer has already counted it): the public
        # schedule is min(0.3, 0.001 + 0.001 n) with n = 0 at the first update (TDM-R1 repository,
        # train script: the EMA step reads `global_step` before it is incremented)
        done_before = self.loop.updates[SUR] - 1
        decay = min(m.old_decay_max, m.old_decay_min + 0.001 * done_before)
        common.soft_update(self.loop, OLD, SUR, decay)
        if m.reference == "ema":
            common.soft_update(self.loop, REF, SUR, m.reference_ema_decay)


class Distill(TdmR1):
    """TDM distillation: the same updates without a reward (no surrogate): reverse KL + CFG reward."""

    name = "distill"
    uses_reward = False
