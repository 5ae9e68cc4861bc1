"""The training loop (recipe shape): setup, a loop over epochs, one update per micro-batch, checkpoints.

One frozen base transformer carries the LoRA roles a training method asks for (the method is a
plug-in: :mod:`tdm_r1.train.methods`; TDM-R1 and TDM distillation are
:mod:`tdm_r1.train.methods.tdm_r1`). Per epoch:

1. plan: the epoch's prompts, groups shuffled but kept whole in micro-batches (:mod:`.rollout`);
2. rollout: K deterministic steps with the generator, every boundary latent kept; decoded
   images are scored by the reward while the next chunk is generated;
3. per-prompt group advantages over the whole (all-processes) batch;
4. for each micro-batch the method's update; an optimiser step per trainable role every
   ``optim.grad_accum`` micro-batches; the generator EMA after each generator update.

Reproducibility: every random draw comes from a named stream (:class:`tdm_r1.seeds.Stream`)
seeded by (run seed, stream, epoch, keys such as micro-step, boundary, global sample or group
index), so results do not depend on the number of processes, and a run resumed from a
checkpoint continues exactly as if uninterrupted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdm_r1.config import dump_yaml, to_dict
from tdm_r1.devices import peak_memory_mb
from tdm_r1.errors import ConfigError
from tdm_r1.losses.advantages import group_advantages
from tdm_r1.seeds import Stream, derive_seed
from tdm_r1.train import checkpoint
from tdm_r1.train.config import TrainConfig, check_world, trainable_steps
from tdm_r1.train.diagnostics import heldout_metrics
from tdm_r1.train.ema import EMA
from tdm_r1.train.methods.base import GEN, Batch, TrainingMethod
from tdm_r1.train.prompts import PromptSource
from tdm_r1.train.publish import export_generator
from tdm_r1.train.resume import check_resume
from tdm_r1.train.rollout import EpochPlan, Rollout, plan_epoch, run_rollout
from tdm_r1.train.tracking import RunLog, progress_postfix

log = logging.getLogger(__name__)


class Trainer:
    """Any registered training method on any :class:`~tdm_r1.models.preset.FlowAdapter`.

    Use: ``Trainer(cfg).fit()`` (setup, resume, train, finalize), or the stages separately.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.run_dir = cfg.run_dir()
        self.epoch = 0
        self.updates: dict[str, int] = {}
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
        self.world, self.rank, self.device = self.acc.num_processes, self.acc.process_index, self.acc.device
        # the method's incompatibilities with the config and the model preset, before anything loads
        from tdm_r1.models.preset import resolve_model
        from tdm_r1.registry import METHODS
        from tdm_r1.train.model_check import check_model_recipe

        self.preset = resolve_model(cfg.model.name)
        check_model_recipe(cfg, self.preset)  # text length and LoRA scale against the presets
        if cfg.model.lora_scale is not None:
            self.preset = self.preset.with_overrides(lora_scale=cfg.model.lora_scale)
        self._method_cls = METHODS.get(cfg.method_name)
        self._method_cls.check(cfg, self.preset)
        # the reward first: a reward that cannot load fails here, before a model is loaded
        self.reward = None
        if not cfg.distill:
            from tdm_r1.rewards.base import build_reward

            self.reward = build_reward(cfg.rewards, options=cfg.reward_options, device=str(self.device))
        self.prompts = PromptSource(cfg.data, seed=cfg.seed)
        self._load_model()
        self.method = self._build_method()
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.clean_partial(self.run_dir / "checkpoints")
            for key, old, new in self._config_changes:
                log.info("resuming with %s changed: %r -> %r", key, old, new)
            dump_yaml(cfg, self.run_dir / "config.yaml")
        self.tracking = RunLog(cfg, self.run_dir, self.acc.is_main_process)
        self._resume()
        self._setup_done = True

    def _load_model(self) -> None:
        """The teacher checked against the generator's preset, the adapter and the step schedule."""
        from accelerate.utils import set_seed

        from tdm_r1.models.preset import resolve_model

        cfg, preset = self.cfg, self.preset
        if cfg.model.teacher is not None:
            teacher = resolve_model(cfg.model.teacher)
            if teacher.hub_id != preset.hub_id:
                raise ConfigError(
                    f"teacher {cfg.model.teacher!r} ({teacher.hub_id}) is not the base pipeline of model "
                    f"{cfg.model.name!r} ({preset.hub_id}): the roles share one frozen transformer"
                )
        set_seed(cfg.seed)  # LoRA initialisations and anything else drawn from the global RNGs
        overrides: dict[str, Any] = {"offload_text_encoders": cfg.model.offload_text_encoders}
        for key in ("height", "width"):
            if getattr(cfg.model, key) is not None:
                overrides[key] = getattr(cfg.model, key)
        self.adapter = preset.load(device=self.device, dtype=cfg.model.dtype, **overrides)
        if GEN in self.adapter.roles:  # scale s on (A, B) = 1 on (A, sB): copies, EMA, export need none
            self.adapter.roles.fold_scale(GEN)
        #: the model's inference steps (exported) and the training rollout's (a method may use fewer)
        self.infer_steps = cfg.model.steps or preset.sampling.steps
        self.steps = self._method_cls.rollout_steps(cfg) or self.infer_steps
        self.schedule = self.adapter.schedule(self.steps, spacing=cfg.model.spacing)
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
        self.shift = cfg.method.shift if cfg.method.shift is not None else self.adapter.sampling.shift

    def _build_method(self) -> TrainingMethod:
        """The method, its LoRA roles (in its order: LoRA inits draw from the global RNG), optimisers, EMA."""
        cfg, a, o = self.cfg, self.adapter, self.cfg.optim
        method: TrainingMethod = self._method_cls(self)
        lora = dict(
            rank=cfg.model.lora_rank, alpha=cfg.model.lora_alpha, target_modules=cfg.model.lora_targets
        )
        self.opt: dict[str, torch.optim.Optimizer] = {}
        for spec in method.roles():
            if spec.name not in a.roles:
                a.add_role(spec.name, init=spec.init, trainable=spec.trainable, **lora)
            if spec.copy_from is not None:
                a.set_role_weights(spec.name, a.get_role_state(spec.copy_from), source=spec.copy_from)
            if spec.trainable:
                a.set_trainable(spec.name, True)
                self.opt[spec.name] = torch.optim.AdamW(
                    a.role_parameters(spec.name),
                    lr=o.lr * spec.lr_scale,
                    betas=spec.betas,
                    weight_decay=o.weight_decay,
                    eps=o.eps,
                )
        self.updates = {role: 0 for role in self.opt}  # a resume (after setup) restores the counts
        if cfg.model.gradient_checkpointing:  # recomputation runs with the role of the forward
            a.roles.enable_gradient_checkpointing()
        self.ema = EMA(a.role_parameters(GEN), o.ema_decay, warmup=o.ema_warmup)
        return method

    # ------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        a = self.adapter
        return {
            "epoch": self.epoch,
            "updates": dict(self.updates),
            "roles": {r: a.get_role_state(r, device="cpu") for r in a.roles},
            "opt": {r: o.state_dict() for r, o in self.opt.items()},
            "ema": self.ema.state_dict(),
            "method": self.method.state(),
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
        self.method.load_state(state.get("method", {}))
        self.prompts.set_state(state["prompts"])
        checkpoint.set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.updates = state["updates"]
        self.history = state["history"]
        log.info("resumed from %s at epoch %d", last, self.epoch)

    # ----------------------------------------------------------------------- streams (the Loop)
    def seed(self, stream: Stream | str, *keys: int) -> int:
        """The seed of a draw of ``stream`` in the current epoch, keyed by ``keys``."""
        return derive_seed(self.cfg.seed, stream, self.epoch, *keys)

    def row_seeds(self, stream: Stream | str, keys: tuple[int, ...], rows: list[int]) -> list[int]:
        """One seed per row (global sample or group index) of a draw of ``stream``."""
        return [self.seed(stream, *keys, r) for r in rows]

    # ---------------------------------------------------------------------------------- rollout
    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's prompts and its group-contiguous micro-batch order (see :func:`plan_epoch`)."""
        prompts = self.prompts.sample(self.cfg.rollout.prompts_per_epoch)
        order_seed = derive_seed(self.cfg.seed, Stream.ORDER, epoch)
        return plan_epoch(self.cfg, prompts, order_seed, self.world, self.rank)

    def rollout(self, plan: EpochPlan) -> Rollout:
        cfg, m = self.cfg, self.method
        return run_rollout(
            self.adapter,
            self.schedule,
            plan,
            group_size=cfg.rollout.group_size,
            batch_size=cfg.rollout.batch_size,
            noise_seeds=lambda index: self.row_seeds(Stream.NOISE, (), index),
            device=self.device,
            reward=self.reward,
            async_rewards=cfg.rollout.async_rewards,
            role=m.rollout_role,
            guidance=m.rollout_guidance,
            sde=m.sde_plan() if m.rollout_kind == "sde" else None,
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

    # ------------------------------------------------------------------------- optimiser steps
    def backward(self, loss: torch.Tensor, role: str) -> None:
        """Backward with ``role`` active, scaled by the backward calls per update (checkpointing recomputes
        each block with its forward's role whatever is active: :mod:`tdm_r1.models.role_checkpoint`)."""
        micro_steps = self.cfg.samples_per_epoch // self.cfg.method.micro_batch
        accum = (self.cfg.optim.grad_accum or micro_steps) * self.method.backwards_per_micro
        with self.adapter.use_role(role):
            (loss / accum).backward()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
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
        self.method.after_update(role)
        return float(norm)

    # ----------------------------------------------------------------------------------- epoch
    def train_epoch(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        ro = self.rollout(self.plan(self.epoch))
        t_roll = time.perf_counter() - t0
        adv, stats = (torch.zeros(len(ro.prompts)), {}) if cfg.distill else self.advantages(ro)
        self.method.begin_epoch(ro, adv)
        per = cfg.method.micro_batch // self.world
        micro_steps = len(ro.prompts) // per
        accum = cfg.optim.grad_accum or micro_steps
        losses: dict[str, list[float]] = {}
        for mi in range(micro_steps):
            sl = slice(mi * per, (mi + 1) * per)
            batch = Batch(
                micro=mi,
                block=mi // cfg.micro_per_block,  # a group's micro-batches share the block's draws
                rows=sl,
                index=ro.index[sl],
                group=ro.group[sl],
                latents=ro.latents[sl],
                adv=adv[sl],
                cond=self.adapter.encode_prompts(ro.prompts[sl]),
            )
            for key, vals in self.method.train_micro(batch).items():
                losses.setdefault(key, []).extend(vals)
            if (mi + 1) % accum == 0 or mi == micro_steps - 1:
                for role in self.opt:
                    losses.setdefault(f"grad_norm_{role}", []).append(self._step(role))
        self.method.end_epoch()
        self.epoch += 1
        means = {k: float(np.mean(v)) for k, v in losses.items()}
        if self.world > 1:  # every process holds an equal share: the global mean is the mean of means
            keys = sorted(means)
            vals = (
                self.all_reduce_sum(torch.tensor([means[k] for k in keys], dtype=torch.float64)) / self.world
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
            "peak_mem_mb": peak_memory_mb(self.device),
        }
        metrics.update(self._detail_means(ro))
        metrics.update(self.method.epoch_metrics())  # e.g. TDM-R1's instruments (method.diagnostics_every)
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
            if cfg.eval_every and self.epoch % cfg.eval_every == 0 and cfg.eval_benchmarks:
                # the EMA generator on the suites' fixed prompts: heldout_<suite>_<metric> in the epoch's row
                try:
                    metrics.update(heldout_metrics(self.evaluate(tag=f"epoch-{self.epoch}")))
                except BaseException:  # a failed evaluation loses no training: record, checkpoint, re-raise
                    self.history.append(metrics)
                    self.tracking.epoch(metrics)
                    self.save_checkpoint()
                    raise
            if self.epoch in cfg.export_epochs and self.acc.is_main_process:
                export_generator(self, self.run_dir / "exports" / f"epoch-{self.epoch}")
            self.history.append(metrics)
            self.tracking.epoch(metrics)
            bar.update(1)
            bar.set_postfix(progress_postfix(self.history))
            stop = bool(cfg.max_minutes) and (time.perf_counter() - t0) / 60 > cfg.max_minutes
            if (
                (cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0)
                or stop
                or self.epoch == cfg.max_epochs
            ):
                self.save_checkpoint()
        bar.close()
        self.tracking.summary(self.epoch, self.updates, time.perf_counter() - t0)
        return self.finalize()

    # --------------------------------------------------------------------------------- outputs
    def evaluate(self, tag: str, exported: Path | None = None) -> Path | None:
        """Evaluate the EMA generator with the eval runner into ``<run>/eval/<tag>``.

        ``exported``: a folder :func:`~tdm_r1.train.publish.export_generator` already wrote
        (``final/``), evaluated as it is; otherwise the EMA generator is exported there first.
        """
        from tdm_r1.train.publish import evaluate_export

        self.acc.wait_for_everyone()
        out = self.run_dir / "eval" / tag
        if exported is None and self.acc.is_main_process:
            export_generator(self, out)
        self.acc.wait_for_everyone()
        return evaluate_export(exported or out, self, out)

    def finalize(self) -> Path:
        from tdm_r1.train.plots import plot_curves

        self.acc.wait_for_everyone()
        final = self.run_dir / "final"
        if self.acc.is_main_process:
            export_generator(self, final)
            plot_curves(self.history, self.run_dir / "curves.png", title=self.cfg.name)
        self.acc.wait_for_everyone()
        if self.cfg.eval_benchmarks:
            self.evaluate(tag="final", exported=final)
        self.tracking.close()
        return self.run_dir


def iter_history(path: str | Path) -> Iterator[dict[str, Any]]:
    with Path(path).open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
