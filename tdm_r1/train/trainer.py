"""The TDM-R1 trainer: surrogate reward learning + generator learning, with any reward.

One frozen base transformer carries LoRA roles: ``generator`` (the few-step student),
``fake`` (TDM's fake score), ``surrogate`` (the learned reward model) plus two frozen copies
(``surrogate_old``, a fast EMA of the surrogate for the PPO-style clip, and ``reference`` when
the dynamic EMA reference is used). The base itself (adapters off) is the teacher and the
frozen reference. Per epoch (``method.md`` section 2.5):

1. rollout: K deterministic steps with the generator, every boundary latent kept; decoded
   images are scored by the reward while the next chunk is generated;
2. per-prompt group advantages over the whole (all-processes) batch;
3. for each micro-batch and each drawn boundary j: a fake-score step, a surrogate step and a
   generator step; the generator EMA after each generator update.

With no reward the surrogate disappears and the generator learns reverse KL + CFG reward only:
that is TDM distillation, so ``tdmbench distill`` is this trainer.

Reproducibility: every random draw comes from a seed derived from (run seed, epoch, micro-step,
boundary, global sample or group index), so results do not depend on the number of processes,
and a run resumed from a checkpoint continues exactly as if uninterrupted.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdm_r1.config import dump_yaml, to_dict
from tdm_r1.errors import ConfigError
from tdm_r1.method.advantages import group_advantages
from tdm_r1.method.losses import fake_score_loss, generator_loss, group_preference_sums, surrogate_loss
from tdm_r1.method.noise import renoise, sample_sigma_above, surrogate_velocity_target
from tdm_r1.sampling import derive_seed, sample
from tdm_r1.train import checkpoint
from tdm_r1.train.config import TrainConfig, check_world, trainable_steps
from tdm_r1.train.ema import EMA
from tdm_r1.train.prompts import PromptSource
from tdm_r1.train.resume import check_resume

log = logging.getLogger(__name__)

GEN, FAKE, SUR, OLD, REF = "generator", "fake", "surrogate", "surrogate_old", "reference"


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


def _rows_randn(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *shape) standard normal, one generator per row (independent of batching)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _rows_rand(seeds: list[int]) -> torch.Tensor:
    return torch.stack([torch.rand((), generator=torch.Generator().manual_seed(s)) for s in seeds])


class Trainer:
    """TDM-R1 / TDM distillation on any :class:`~tdm_r1.models.base.FlowAdapter`.

    Use: ``Trainer(cfg).fit()`` (setup, resume, train, finalize), or the stages separately.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.run_dir = cfg.run_dir()
        self.epoch = 0
        self.updates = {GEN: 0, FAKE: 0, SUR: 0}
        self.history: list[dict[str, Any]] = []
        self._setup_done = False

    # ------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Validate everything that can fail before any compute, then build models and optimisers."""
        from accelerate import Accelerator

        cfg = self.cfg
        # a resume must continue the same run: compare with the run's config before anything loads
        self._config_changes = []
        if checkpoint.complete(self.run_dir / "checkpoints"):
            self._config_changes = check_resume(self.run_dir, to_dict(cfg))
        cpu = cfg.model.device == "cpu" or (cfg.model.device is None and not torch.cuda.is_available())
        self.acc = Accelerator(cpu=cpu)
        check_world(cfg, self.acc.num_processes)
        self.world = self.acc.num_processes
        self.rank = self.acc.process_index
        self.device = self.acc.device
        # the reward first: a reward that cannot load fails here, before a model is loaded
        self.reward = None
        if not cfg.distill:
            from tdm_r1.rewards.base import build_reward

            self.reward = build_reward(cfg.rewards, options=cfg.reward_options, device=str(self.device))
        self.prompts = PromptSource(cfg.data, seed=cfg.seed)
        from tdm_r1.models.base import resolve_model

        preset = resolve_model(cfg.model.name)
        if cfg.model.teacher is not None:
            teacher = resolve_model(cfg.model.teacher)
            if teacher.hub_id != preset.hub_id:
                raise ConfigError(
                    f"teacher {cfg.model.teacher!r} ({teacher.hub_id}) is not the base pipeline of model "
                    f"{cfg.model.name!r} ({preset.hub_id}): the roles share one frozen transformer"
                )
        self.preset = preset
        from accelerate.utils import set_seed

        set_seed(cfg.seed)  # LoRA initialisations and anything else drawn from the global RNGs
        overrides: dict[str, Any] = {"offload_text_encoders": cfg.model.offload_text_encoders}
        for key in ("height", "width"):
            if getattr(cfg.model, key) is not None:
                overrides[key] = getattr(cfg.model, key)
        self.adapter = preset.load(device=self.device, dtype=cfg.model.dtype, **overrides)
        a = self.adapter
        self.steps = cfg.model.steps or preset.steps
        self.schedule = a.schedule(self.steps, spacing=cfg.model.spacing)
        self.sigmas = self.schedule.sigmas.float()
        self.model_sigmas = self.schedule.model_sigmas.float()
        self.train_steps = trainable_steps(self.sigmas, cfg.method.min_step)
        skipped = sorted(set(range(self.steps)) - set(self.train_steps))
        if skipped:
            log.warning(
                "steps %s of the %s schedule %s are shorter than method.min_step=%g: no update is "
                "drawn on them (a zero-length or near-zero step does no work)",
                skipped,
                self.schedule.solver,
                [round(float(x), 4) for x in self.sigmas],
                cfg.method.min_step,
            )
        if not self.train_steps:
            raise ConfigError(
                f"no step of the schedule {self.sigmas.tolist()} is longer than method.min_step"
            )
        self.micro_per_block = cfg.micro_per_block
        self.shift = cfg.method.shift if cfg.method.shift is not None else a.sampling.shift
        lora = dict(
            rank=cfg.model.lora_rank, alpha=cfg.model.lora_alpha, target_modules=cfg.model.lora_targets
        )
        if GEN not in a.roles:
            a.add_role(GEN, init=cfg.model.generator_init, **lora)
        a.set_trainable(GEN, True)
        a.add_role(FAKE, init="zeros", **lora)
        roles = [GEN, FAKE]
        if not cfg.distill:
            a.add_role(SUR, init="zeros", **lora)
            a.add_role(OLD, init="zeros", trainable=False, **lora)
            a.set_role_weights(OLD, a.get_role_state(SUR), source="surrogate")
            if cfg.method.reference == "ema":
                a.add_role(REF, init="zeros", trainable=False, **lora)
                a.set_role_weights(REF, a.get_role_state(SUR), source="surrogate")
            roles.append(SUR)
        if cfg.model.gradient_checkpointing:
            a.transformer.enable_gradient_checkpointing()
        o = cfg.optim
        lrs = {
            GEN: o.lr * o.generator_lr_scale,
            FAKE: o.lr * o.fake_lr_scale,
            SUR: o.lr * o.surrogate_lr_scale,
        }
        betas = {GEN: o.generator_betas, FAKE: o.fake_betas, SUR: o.surrogate_betas}
        self.opt = {
            r: torch.optim.AdamW(
                a.role_parameters(r), lr=lrs[r], betas=tuple(betas[r]), weight_decay=o.weight_decay, eps=o.eps
            )
            for r in roles
        }
        self.ema = EMA(a.role_parameters(GEN), o.ema_decay, warmup=o.ema_warmup)
        self.null = a.null_conditioning(1)
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.clean_partial(self.run_dir / "checkpoints")
            for key, old, new in self._config_changes:
                log.info("resuming with %s changed: %r -> %r", key, old, new)
            dump_yaml(cfg, self.run_dir / "config.yaml")
        self._trackers()
        self._resume()
        self._setup_done = True

    def _trackers(self) -> None:
        import importlib.util

        self.tb = None
        if not self.acc.is_main_process:
            return
        if "tensorboard" in self.cfg.trackers and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.wandb = None
        if "wandb" in self.cfg.trackers and importlib.util.find_spec("wandb") is not None:
            import wandb

            self.wandb = wandb.init(project="tdmbench", name=self.cfg.name, config=to_dict(self.cfg))

    # ------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        a = self.adapter
        return {
            "epoch": self.epoch,
            "updates": dict(self.updates),
            "roles": {r: a.get_role_state(r, device="cpu") for r in a.roles},
            "opt": {r: o.state_dict() for r, o in self.opt.items()},
            "ema": self.ema.state_dict(),
            "prompts": self.prompts.state(),
            "rng": checkpoint.rng_state(),
            "history": self.history,
        }

    def save_checkpoint(self) -> Path | None:
        self.acc.wait_for_everyone()
        path = None
        if self.acc.is_main_process:
            path = checkpoint.save(self.run_dir / "checkpoints", self.epoch, self._state())
            log.info("checkpoint %s", path)
        self.acc.wait_for_everyone()
        return path

    def _resume(self) -> None:
        found = checkpoint.load_newest(self.run_dir / "checkpoints")
        if found is None:
            return
        last, state = found
        for role, tensors in state["roles"].items():
            self.adapter.set_role_weights(role, tensors, source=str(last))
        for role, sd in state["opt"].items():
            self.opt[role].load_state_dict(sd)
        self.ema.load_state_dict(state["ema"])
        self.prompts.set_state(state["prompts"])
        checkpoint.set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.updates = state["updates"]
        self.history = state["history"]
        log.info("resumed from %s at epoch %d", last, self.epoch)

    # ---------------------------------------------------------------------------------- rollout
    def plan(self, epoch: int) -> EpochPlan:
        """Group-contiguous order: the groups are shuffled, a group's members stay together.

        A global micro-batch then holds whole groups (micro_batch a multiple of group_size), or a
        group fills several consecutive micro-batches (a "block", group_size a multiple of
        micro_batch); each process takes its slice of every global micro-batch.
        """
        cfg = self.cfg
        prompts = self.prompts.sample(cfg.rollout.prompts_per_epoch)
        n, g = cfg.samples_per_epoch, cfg.rollout.group_size
        perm = torch.randperm(
            cfg.rollout.prompts_per_epoch,
            generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "order", epoch)),
        )
        order = [k * g + i for k in perm.tolist() for i in range(g)]
        mb, per = cfg.method.micro_batch, cfg.method.micro_batch // self.world
        local = []
        for start in range(0, n, mb):
            local.extend(range(start + self.rank * per, start + (self.rank + 1) * per))
        return EpochPlan(prompts=prompts, order=order, local=local)

    def rollout(self, plan: EpochPlan) -> Rollout:
        cfg, a = self.cfg, self.adapter
        g = cfg.rollout.group_size
        index = [plan.order[p] for p in plan.local]
        groups = [i // g for i in index]
        recs = [plan.prompts[k] for k in groups]
        prompts = [r["prompt"] for r in recs]
        seeds = [derive_seed(cfg.seed, "noise", self.epoch, i) for i in index]
        height, width = a.sampling.height, a.sampling.width
        lat_chunks: list[torch.Tensor] = []
        futures: list[Future] = []
        pool = (
            ThreadPoolExecutor(max_workers=1)
            if (self.reward is not None and cfg.rollout.async_rewards)
            else None
        )
        bs = cfg.rollout.batch_size
        try:
            for s in range(0, len(prompts), bs):
                cond = a.encode_prompts(prompts[s : s + bs])
                noise = a.initial_noise(seeds[s : s + bs], height, width).to(self.device)
                traj = sample(a, cond, noise, self.schedule, guidance=1.0, role=GEN, return_x0=False)
                lat_chunks.append(traj.latents.cpu())
                if self.reward is not None:
                    images = a.decode(traj.final)
                    args = dict(images=images.cpu(), prompts=prompts[s : s + bs], metadata=recs[s : s + bs])
                    futures.append(pool.submit(self.reward, **args) if pool else _done(self.reward(**args)))
            outs = [f.result() for f in futures]
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        latents = torch.cat(lat_chunks)
        if outs:
            rewards = torch.cat([o.scores for o in outs])
            details: dict[str, list[Any]] = {}
            for o in outs:
                for k, col in o.details.items():
                    details.setdefault(k, []).extend(
                        col.tolist() if isinstance(col, torch.Tensor) else list(col)
                    )
        else:
            rewards, details = torch.full((len(prompts),), float("nan")), {}
        return Rollout(
            index=torch.tensor(index),
            group=torch.tensor(groups),
            prompts=prompts,
            metadata=recs,
            latents=latents,
            rewards=rewards,
            details=details,
        )

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        return self.acc.gather(t.to(self.device)).cpu()

    def advantages(self, ro: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """Global group advantages (all processes' rewards), returned for this process's samples."""
        idx = self._gather(ro.index)
        rew = self._gather(ro.rewards.float())
        order = torch.argsort(idx)
        rew = rew[order]
        groups = torch.arange(len(rew)) // self.cfg.rollout.group_size
        adv = group_advantages(rew, groups, std=self.cfg.method.adv_std, clip=self.cfg.method.adv_clip)
        finite = rew[torch.isfinite(rew)]
        stats = {
            "reward_mean": float(finite.mean()) if len(finite) else float("nan"),
            "reward_std": float(finite.std(unbiased=False)) if len(finite) > 1 else 0.0,
            "reward_max": float(finite.max()) if len(finite) else float("nan"),
            "zero_std_groups": adv.zero_std_groups,
            "zero_std_group_share": adv.zero_std_groups / max(1, self.cfg.rollout.prompts_per_epoch),
            "nan_rewards": adv.nan_rewards,
        }
        return adv.values[ro.index], stats

    # --------------------------------------------------------------------------------- updates
    def _seeds(self, kind: str, micro: int, j: int, keys: list[int]) -> list[int]:
        return [derive_seed(self.cfg.seed, kind, self.epoch, micro, j, k) for k in keys]

    def _teacher_x0(self, x: torch.Tensor, s: torch.Tensor, cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond_x0, uncond_x0) of the frozen base at x (N,C,h,w), sigma s (N,)."""
        from tdm_r1.models.adapter import Conditioning

        n = x.shape[0]
        both = Conditioning.cat([cond, self.null.repeat(n).to(cond.device)])
        v = self.adapter.velocity(torch.cat([x, x]), torch.cat([s, s]), both, role=None).float()
        x0 = torch.cat([x, x]) - s.repeat(2).view(-1, 1, 1, 1) * v
        return x0[:n], x0[n:]

    def _guided_x0(
        self, role: str, x: torch.Tensor, s: torch.Tensor, cond: Any, scale: float
    ) -> torch.Tensor:
        from tdm_r1.models.adapter import Conditioning

        n = x.shape[0]
        if scale == 1.0:
            v = self.adapter.velocity(x, s, cond, role=role).float()
        else:
            both = Conditioning.cat([cond, self.null.repeat(n).to(cond.device)])
            out = self.adapter.velocity(torch.cat([x, x]), torch.cat([s, s]), both, role=role).float()
            v = out[n:] + scale * (out[:n] - out[n:])
        return x - s.view(-1, 1, 1, 1) * v

    def _boundary(
        self, lat: torch.Tensor, j: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = lat.shape[0]
        x_t = lat[:, j].to(self.device)
        full = lambda v: torch.full((n,), float(v), device=self.device)  # noqa: E731
        return x_t, full(self.sigmas[j]), full(self.sigmas[j + 1]), full(self.model_sigmas[j])

    def _kl_query(self, micro: int, j: int, gidx: list[int], sigma_n: torch.Tensor, shape: tuple[int, ...]):
        """Noise level and noise of the fake / KL query for boundary j (shared by both steps)."""
        u = _rows_rand(self._seeds("tau", micro, j, gidx))
        s_tau = sample_sigma_above(
            sigma_n.cpu(), t_min=0.0, shift=self.shift, margin=self.cfg.method.margin, u=u
        )
        eps = _rows_randn(self._seeds("eps", micro, j, gidx), shape)
        return s_tau.to(self.device), eps.to(self.device)

    def fake_step(self, lat: torch.Tensor, cond: Any, gidx: list[int], micro: int, j: int) -> float:
        a, m = self.adapter, self.cfg.method
        x_t, s_t, s_n, s_model = self._boundary(lat, j)
        with torch.no_grad():
            v = a.velocity(x_t, s_model, cond, role=GEN).float()
            x0 = x_t - s_t.view(-1, 1, 1, 1) * v
            x_next = x_t - (s_t - s_n).view(-1, 1, 1, 1) * v
        s_tau, eps = self._kl_query(micro, j, gidx, s_n, tuple(x_t.shape[1:]))
        x_tau, _, _ = renoise(x_next, s_n, s_tau, eps)
        with torch.no_grad():
            v_real = a.velocity(x_tau, s_tau, cond, role=None).float() if m.fake_anchor else None
        v_fake = a.velocity(x_tau, s_tau, cond, role=FAKE).float()
        loss = fake_score_loss(
            v_fake, x_tau=x_tau, x0_gen=x0, sigma_tau=s_tau, v_real=v_real, anchor=m.fake_anchor
        )
        self._backward(loss, FAKE)
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
        a, m, cfg = self.adapter, self.cfg.method, self.cfg
        valid = self.train_steps
        probs = torch.tensor([j + 1 for j in valid], dtype=torch.float64)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "sur-j", self.epoch, blk, j_draw))
        j = valid[int(torch.multinomial(probs / probs.sum(), 1, generator=gen))]
        n = lat.shape[0]
        x_n = lat[:, j + 1].to(self.device)
        s_n = torch.full((n,), float(self.sigmas[j + 1]))
        gl = groups.tolist()
        u = _rows_rand(self._seeds("sur-tau", blk, j_draw, gl))
        s_tau = sample_sigma_above(s_n, t_min=m.t_min_dgpo_reward, shift=self.shift, margin=m.margin, u=u)
        eps = _rows_randn(self._seeds("sur-eps", blk, j_draw, gl), tuple(x_n.shape[1:])).to(self.device)
        s_n, s_tau = s_n.to(self.device), s_tau.to(self.device)
        x_tau, alpha, beta = renoise(x_n, s_n, s_tau, eps)
        target = surrogate_velocity_target(x_n, s_n, s_tau, eps, alpha, beta)
        with torch.no_grad():
            v_ref = a.velocity(x_tau, s_tau, cond, role=REF if m.reference == "ema" else None).float()
            v_old = a.velocity(x_tau, s_tau, cond, role=OLD).float()
        v_phi = a.velocity(x_tau, s_tau, cond, role=SUR).float()
        per = lambda x: x.flatten(1).mean(1)  # noqa: E731
        errors = [per((target - v_phi) ** 2), per((target - v_ref) ** 2), per((target - v_old) ** 2)]
        return j, *errors, per((v_phi - v_ref) ** 2)

    @torch.no_grad()
    def block_group_sums(self, ro: Rollout, adv: torch.Tensor, slices: list[slice], blk: int, j_draw: int):
        """(P,) float64 sums ``sum_{i in g} A_i (l_phi_i - l_ref_i)`` over a block's micro-batches.

        Used when a group is larger than a micro-batch: the group weight needs the whole group, so
        the pieces are first scored without gradient (the surrogate does not change inside a block:
        ``optim.grad_accum`` is a multiple of the block length), then trained piece by piece.
        """
        total = torch.zeros(self.cfg.rollout.prompts_per_epoch, dtype=torch.float64)
        for sl in slices:
            cond = self.adapter.encode_prompts(ro.prompts[sl])
            _, l_phi, l_ref, _, _ = self._surrogate_errors(ro.latents[sl], cond, ro.group[sl], blk, j_draw)
            total += group_preference_sums(
                adv[sl], l_phi.cpu(), l_ref.cpu(), ro.group[sl], self.cfg.rollout.prompts_per_epoch
            )
        return self._all_reduce_sum(total) if self.world > 1 else total

    def surrogate_step(
        self,
        lat: torch.Tensor,
        cond: Any,
        adv: torch.Tensor,
        groups: torch.Tensor,
        blk: int,
        j_draw: int,
        group_sum: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """DGPO step of the surrogate on one micro-batch (whole groups, or a block's piece + ``group_sum``)."""
        m, cfg = self.cfg.method, self.cfg
        j, l_phi, l_ref, l_old, reg = self._surrogate_errors(lat, cond, groups, blk, j_draw)
        out = surrogate_loss(
            l_phi,
            l_ref,
            l_old,
            reg,
            adv.to(self.device),
            groups.to(self.device),
            n_groups=cfg.rollout.prompts_per_epoch,
            group_size=cfg.rollout.group_size,
            beta_dpo=m.beta_dpo,
            clip_range=m.clip_range,
            reg_threshold=m.reg_threshold,
            anchor_beta=m.anchor_beta,
            time_weight=(j + 1) / self.steps if m.use_tweight else 1.0,
            all_reduce=self._all_reduce_sum if self.world > 1 else None,
            group_sum=None if group_sum is None else group_sum.to(self.device),
        )
        self._backward(out.loss, SUR)
        return {
            "surrogate_loss": float(out.loss.detach()),
            "surrogate_group_weight": out.group_weight_mean,
            "surrogate_group_weight_std": out.group_weight_std,
            "surrogate_clipped": out.clipped_fraction,
            "surrogate_drift": out.drift,
        }

    def generator_step(
        self,
        lat: torch.Tensor,
        cond: Any,
        gidx: list[int],
        groups: torch.Tensor,
        micro: int,
        j: int,
        blk: int,
    ) -> dict[str, float]:
        """Generator step at boundary j; the surrogate's reward query is shared by a group (keyed by block)."""
        a, m, cfg = self.adapter, self.cfg.method, self.cfg
        x_t, s_t, s_n, s_model = self._boundary(lat, j)
        v = a.velocity(x_t, s_model, cond, role=GEN).float()
        x0 = x_t - s_t.view(-1, 1, 1, 1) * v
        x_next = (x_t - (s_t - s_n).view(-1, 1, 1, 1) * v).detach()
        s_tau, eps = self._kl_query(micro, j, gidx, s_n, tuple(x_t.shape[1:]))
        x_tau, _, _ = renoise(x_next, s_n, s_tau, eps)
        rl = not cfg.distill and j < m.trunc_steps
        # ablation (method.surrogate_term=false): same rollouts, rewards and surrogate training, and
        # the same KL/CFG weights, but the generator never receives the surrogate's reward direction
        with torch.no_grad():
            fake_x0 = x_tau - s_tau.view(-1, 1, 1, 1) * a.velocity(x_tau, s_tau, cond, role=FAKE).float()
            cond_x0, uncond_x0 = self._teacher_x0(x_tau, s_tau, cond)
            guided_x0 = uncond_x0 + m.teacher_cfg * (cond_x0 - uncond_x0)
            sur_x0 = ref_x0 = None
            if rl and m.surrogate_term:
                gl = groups.tolist()
                u = _rows_rand(self._seeds("rl-tau", blk, j, gl))
                s_r = sample_sigma_above(
                    s_n.cpu(), t_min=m.t_min_dgpo, shift=self.shift, margin=m.margin, u=u
                )
                s_r = s_r.to(self.device)
                eps_r = _rows_randn(self._seeds("rl-eps", blk, j, gl), tuple(x_t.shape[1:])).to(self.device)
                x_r, _, _ = renoise(x_next, s_n, s_r, eps_r)
                sur_x0 = self._guided_x0(SUR, x_r, s_r, cond, m.rl_cfg)
                ref_x0 = self._guided_x0(REF if m.reference == "ema" else None, x_r, s_r, cond, 1.0)
        if cfg.distill:
            w = dict(w_kl=m.distill_kl_weight, w_cfg=m.distill_cfg_weight, w_rl=0.0)
        elif rl:
            w = dict(w_kl=1.0, w_cfg=m.tdm_weight, w_rl=(1.0 - m.tdm_weight) if m.surrogate_term else 0.0)
        else:
            w = dict(w_kl=m.tdm_weight, w_cfg=m.tdm_weight, w_rl=0.0)
        out = generator_loss(
            x0,
            cond_x0=cond_x0,
            uncond_x0=uncond_x0,
            fake_x0=fake_x0,
            guided_x0=guided_x0,
            cfg_reward_scale=m.cfg_reward_scale,
            surrogate_x0=sur_x0,
            ref_x0=ref_x0,
            **w,
        )
        self._backward(out.loss, GEN)
        return {"gen_loss": float(out.loss.detach()), "gen_kl": out.kl, "gen_cfg": out.cfg, "gen_rl": out.rl}

    # ------------------------------------------------------------------------- optimiser steps
    def _backward(self, loss: torch.Tensor, role: str) -> None:
        """Backward with ``role`` active: gradient checkpointing recomputes the forward with it."""
        with self.adapter.use_role(role):
            (loss / self._accum_steps()).backward()

    def _accum_steps(self) -> int:
        """Backward calls per optimiser update of one role."""
        micro_steps = self.cfg.samples_per_epoch // self.cfg.method.micro_batch
        per_micro = self.cfg.method.num_train_timesteps
        accum = self.cfg.optim.grad_accum or micro_steps
        return accum * per_micro

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = t.to(self.device).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device)

    def _step(self, role: str) -> float:
        params = self.adapter.role_parameters(role)
        if self.world > 1:
            import torch.distributed as dist

            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world)
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.max_grad_norm)
        self.opt[role].step()
        self.opt[role].zero_grad(set_to_none=True)
        self.updates[role] += 1
        if role == GEN:
            self.ema.update()
        elif role == SUR:
            self._update_frozen_copies()
        return float(norm)

    @torch.no_grad()
    def _update_frozen_copies(self) -> None:
        m = self.cfg.method
        cur = self.adapter.role_parameters(SUR)
        decay = min(m.old_decay_max, m.old_decay_min + 0.001 * self.updates[SUR])
        old = self.adapter.role_parameters(OLD)
        for o, c in zip(old, cur, strict=True):
            o.mul_(decay).add_(c.detach(), alpha=1 - decay)
        if m.reference == "ema":
            for r, c in zip(self.adapter.role_parameters(REF), cur, strict=True):
                r.mul_(m.reference_ema_decay).add_(c.detach(), alpha=1 - m.reference_ema_decay)

    # ----------------------------------------------------------------------------------- epoch
    def train_epoch(self) -> dict[str, Any]:
        cfg, a = self.cfg, self.adapter
        t0 = time.perf_counter()
        plan = self.plan(self.epoch)
        ro = self.rollout(plan)
        t_roll = time.perf_counter() - t0
        adv, stats = (torch.zeros(len(ro.prompts)), {}) if cfg.distill else self.advantages(ro)
        per = cfg.method.micro_batch // self.world
        micro_steps = len(ro.prompts) // per
        accum = cfg.optim.grad_accum or micro_steps
        mpb = self.micro_per_block
        valid = self.train_steps
        losses: dict[str, list[float]] = {}
        sums: dict[int, torch.Tensor] = {}
        for mi in range(micro_steps):
            sl = slice(mi * per, (mi + 1) * per)
            blk = mi // mpb  # a group's micro-batches share the block's draws
            lat, groups = ro.latents[sl], ro.group[sl]
            gidx = ro.index[sl].tolist()
            cond = a.encode_prompts(ro.prompts[sl])
            draw = torch.Generator().manual_seed(derive_seed(cfg.seed, "bounds", self.epoch, blk))
            picks = torch.randperm(len(valid), generator=draw)[: cfg.method.num_train_timesteps].tolist()
            js = [valid[i] for i in picks]
            if mpb > 1 and mi % mpb == 0 and not cfg.distill:
                pieces = [slice(q * per, (q + 1) * per) for q in range(mi, mi + mpb)]
                sums = {jn: self.block_group_sums(ro, adv, pieces, blk, jn) for jn in range(len(js))}
            for jn, j in enumerate(js):
                rec: dict[str, float] = {"fake_loss": self.fake_step(lat, cond, gidx, mi, j)}
                if not cfg.distill:
                    rec.update(self.surrogate_step(lat, cond, adv[sl], groups, blk, jn, sums.get(jn)))
                rec.update(self.generator_step(lat, cond, gidx, groups, mi, j, blk))
                for key, val in rec.items():
                    losses.setdefault(key, []).append(val)
            if (mi + 1) % accum == 0 or mi == micro_steps - 1:
                for role in self.opt:
                    losses.setdefault(f"grad_norm_{role}", []).append(self._step(role))
        self.epoch += 1
        means = {k: float(np.mean(v)) for k, v in losses.items()}
        if self.world > 1:  # every process holds an equal share: the global mean is the mean of means
            keys = sorted(means)
            vals = (
                self._all_reduce_sum(torch.tensor([means[k] for k in keys], dtype=torch.float64)) / self.world
            )
            means = dict(zip(keys, vals.tolist(), strict=True))
        metrics: dict[str, Any] = {
            "epoch": self.epoch,
            "samples": self.epoch * cfg.samples_per_epoch,
            "updates_generator": self.updates[GEN],
            **stats,
            **means,
            "time_rollout_s": t_roll,
            "time_epoch_s": time.perf_counter() - t0,
        }
        metrics.update(self._detail_means(ro))
        return metrics

    def _detail_means(self, ro: Rollout) -> dict[str, float]:
        """Per-task reward means (e.g. GenEval tags) for logging, from this process's samples."""
        out: dict[str, float] = {}
        tags = [m.get("tag") for m in ro.metadata]
        if any(tags) and self.reward is not None:
            for tag in sorted({t for t in tags if t}):
                vals = [
                    float(r) for r, t in zip(ro.rewards.tolist(), tags, strict=True) if t == tag and r == r
                ]
                if vals:
                    out[f"reward_{tag}"] = float(np.mean(vals))
        return out

    def _log(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        if not self.acc.is_main_process:
            return
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if self.tb is not None:
            for key, val in metrics.items():
                if isinstance(val, int | float) and math.isfinite(val):
                    self.tb.add_scalar(key, val, metrics["epoch"])
            self.tb.flush()
        if getattr(self, "wandb", None) is not None:
            self.wandb.log(metrics, step=metrics["epoch"])
        keys = [
            k for k in ("reward_mean", "zero_std_groups", "gen_kl", "gen_rl", "fake_loss") if k in metrics
        ]
        log.info(
            "epoch %d: %s (%.1f s)",
            metrics["epoch"],
            ", ".join(f"{k}={metrics[k]:.4g}" for k in keys),
            metrics["time_epoch_s"],
        )

    # ------------------------------------------------------------------------------------ loop
    def fit(self) -> Path:
        """Setup, resume, train to ``max_epochs`` or ``max_minutes``, finalize. Returns the run folder."""
        if not self._setup_done:
            self.setup()
        cfg = self.cfg
        t0 = time.perf_counter()
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.max_epochs,
            initial=self.epoch,
            desc=cfg.name,
            unit="epoch",
            disable=not self.acc.is_main_process,
        )
        stop = False
        while self.epoch < cfg.max_epochs and not stop:
            metrics = self.train_epoch()
            self._log(metrics)
            bar.update(1)
            bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("reward_mean", "gen_loss") if k in metrics})
            stop = bool(cfg.max_minutes) and (time.perf_counter() - t0) / 60 > cfg.max_minutes
            if cfg.eval_every and self.epoch % cfg.eval_every == 0 and cfg.eval_benchmarks:
                self.evaluate(tag=f"epoch-{self.epoch}")
            if (
                (cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0)
                or stop
                or self.epoch == cfg.max_epochs
            ):
                self.save_checkpoint()
        bar.close()
        self._write_run_summary(time.perf_counter() - t0)
        return self.finalize()

    def _write_run_summary(self, seconds: float) -> None:
        """``<run>/run.json``: how far the run went and what stopped it (the safety cap is reported)."""
        cfg = self.cfg
        stopped_by = "max_epochs" if self.epoch >= cfg.max_epochs else "max_minutes"
        if stopped_by == "max_minutes":
            log.warning(
                "%s stopped by the max_minutes=%g safety cap after %d of %d epochs: this model depends on "
                "the machine's speed; rerun with more time or fewer max_epochs for a reproducible result",
                cfg.name,
                cfg.max_minutes,
                self.epoch,
                cfg.max_epochs,
            )
        if self.acc.is_main_process:
            summary = {
                "epochs": self.epoch,
                "max_epochs": cfg.max_epochs,
                "stopped_by": stopped_by,
                "samples": self.epoch * cfg.samples_per_epoch,
                "updates": dict(self.updates),
                "seconds_this_session": round(seconds, 1),
            }
            (self.run_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")

    # --------------------------------------------------------------------------------- outputs
    def export_generator(self, directory: Path) -> Path:
        """Save the EMA generator (peft LoRA folder) and a ``preset.json`` next to it."""
        from tdm_r1.models.base import register_lora_preset, save_preset_file

        with self.ema.swapped():
            lora_dir = self.adapter.save_role(GEN, directory / "lora")
        base = self.preset
        name = self.cfg.register_as or self.cfg.name
        preset = register_lora_preset(
            name,
            base,
            lora_dir,
            kind="distilled" if self.cfg.distill else "rl",
            sources=f"tdmbench {'distill' if self.cfg.distill else 'train'} run {self.run_dir.name}",
            steps=self.steps,
            guidance=1.0,
            solver=self.schedule.solver,
            spacing=self.cfg.model.spacing or self.adapter.sampling.spacing,
            few_step_base=None if self.cfg.distill else base.name,
            baseline=(self.cfg.model.teacher or base.baseline) if not self.cfg.distill else base.name,
            in_domain=tuple(self.cfg.rewards),
            benchmarks=base.benchmarks,
        )
        save_preset_file(preset, directory / "preset.json")
        return directory

    def evaluate(self, tag: str, exported: Path | None = None) -> Path | None:
        """Evaluate the EMA generator with the eval runner into ``<run>/eval/<tag>``.

        ``exported``: a folder :meth:`export_generator` already wrote (``final/``), evaluated as
        it is; otherwise the EMA generator is exported into ``<run>/eval/<tag>`` first.
        """
        from tdm_r1.eval.runner import evaluate

        cfg = self.cfg
        self.acc.wait_for_everyone()
        out = self.run_dir / "eval" / tag
        if exported is None and self.acc.is_main_process:
            self.export_generator(out)
        self.acc.wait_for_everyone()
        from tdm_r1.models.base import load_preset_file, register_preset

        preset = register_preset(load_preset_file((exported or out) / "preset.json"))
        evaluate(
            preset.name,
            cfg.eval_benchmarks,
            limit=cfg.eval_limit,
            batch_size=cfg.eval_batch_size,
            device=str(self.device),
            results_root=out / "results",
            progress=False,
        )
        return out

    def finalize(self) -> Path:
        self.acc.wait_for_everyone()
        final = self.run_dir / "final"
        if self.acc.is_main_process:
            self.export_generator(final)
            self._plot()
        self.acc.wait_for_everyone()
        if self.cfg.eval_benchmarks:
            self.evaluate(tag="final", exported=final)
        if self.tb is not None:
            self.tb.close()
        return self.run_dir

    def _plot(self) -> None:
        from tdm_r1.train.plots import plot_curves

        plot_curves(self.history, self.run_dir / "curves.png", title=self.cfg.name)


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def iter_history(path: str | Path) -> Iterator[dict[str, Any]]:
    with Path(path).open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
