"""One training micro-step of the direct RL methods (Flow-GRPO, DiffusionNFT, DGPO) on random weights.

The pieces behind ``benchmarks/perf/train.py --methods ...`` (that script writes the table). For each
method a :class:`~tdm_r1.train.trainer.Trainer` is put together by hand around a random-weight
SD3.5-Medium (the base model, the methods' home: Euler, CFG 4.5, shift 3) exactly as
``Trainer.setup`` would leave it, then the loop's own code builds the method, its LoRA roles,
optimisers and EMA (``Trainer._build_method``; ``check`` runs first). One micro-step is

* the method's own ``train_micro`` on one micro-batch (every backward it does), then
* ``Trainer._step`` of each trainable role (grad clip, AdamW, generator EMA, ``after_update``).

What each micro-step holds (the public SD3.5-M recipes of yifan123/flow_grpo, NVlabs/DiffusionNFT and
Luo-Yihong/DGPO; 10-step rollout grid):

* flow-grpo: 9 stochastic steps, each the log-prob recomputation of the stored transition with CFG
  4.5 (a 2x batch forward + backward) and the reference's step mean (no grad) for the KL (beta 0.04);
  LoRA r32/a64, micro-batch 9 (the public per-GPU batch).
* diffusionnft: 9 noise levels, each an ``old`` and a reference forward (no grad) and the
  generator's forward + backward, CFG-free; LoRA r32/a64, micro-batch 9 (the public per-GPU batch).
* dgpo: 4 grid indices, each a reference and a fast-EMA forward (no grad) and the generator's
  forward + backward; LoRA r64/a128, micro-batch 16 (one whole group of 16 per GPU in the public
  4-GPU preset).

Inputs: the stored rollout of Flow-GRPO comes from a real SDE rollout at the micro-batch size
(``tdm_r1.train.rollout.sde_rollout`` with the method's own ``sde_plan``; not timed), so the
recomputed log-probs start on-policy (warm-up ``ratio_mean`` = 1). DiffusionNFT and DGPO use only
the final latent x0, here random; advantages are random. Text encoders are absent (random
conditioning of the real shapes; the empty prompt's too), as after encoding with offloading.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from generation import conditioning, make_adapter

from tdm_r1.models.preset import resolve_model
from tdm_r1.registry import METHODS
from tdm_r1.train.config import load_train_config, trainable_steps
from tdm_r1.train.methods.base import Batch
from tdm_r1.train.rollout import Rollout, sde_rollout
from tdm_r1.train.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A method's public SD3.5-M knobs that change the cost of one micro-step."""

    micro_batch: int
    lora_rank: int
    lora_alpha: float
    #: DGPO's group loss needs whole groups in a micro-batch: the group size is the micro-batch.
    whole_group: bool = False
    what: str = ""


RECIPES = {
    "flow-grpo": Recipe(
        9,
        32,
        64.0,
        what="9 SDE steps of a 10-step rollout: log-prob recomputation with CFG 4.5 (2x batch) + "
        "reference step mean for the KL",
    ),
    "diffusionnft": Recipe(
        9, 32, 64.0, what="9 noise levels: old + reference forwards (no grad) + generator forward/backward"
    ),
    "dgpo": Recipe(
        16,
        64,
        128.0,
        whole_group=True,
        what="4 grid indices: reference + fast-EMA forwards (no grad) + generator forward/backward",
    ),
}
MODEL = "sd3.5-medium"
ROLLOUT_STEPS = 10


def build(
    method: str, reduced: bool, res: int, micro: int, device: torch.device, dtype: torch.dtype
) -> tuple[Trainer, Any]:
    """(trainer with its method, roles and optimisers built; the micro-batch's conditioning)."""
    r = RECIPES[method]
    cfg = load_train_config(
        "sd3.5m-ocr-1gpu",
        overrides=[
            f"name=perf-{method}",
            f"method.name={method}",
            f"method.micro_batch={micro}",
            f"model.name={MODEL}",
            "model.teacher=null",
            f"model.lora_rank={r.lora_rank}",
            f"model.lora_alpha={r.lora_alpha}",
            f"model.height={res}",
            f"model.width={res}",
            "rollout.prompts_per_epoch=1",
            f"rollout.group_size={micro if r.whole_group else max(micro, 2)}",
            f"method.{method.replace('-', '_')}.rollout_steps={ROLLOUT_STEPS}",
        ],
    )
    preset = resolve_model(MODEL)
    t = Trainer(cfg)
    t._method_cls = METHODS.get(cfg.method_name)
    t._method_cls.check(cfg, preset)  # the method's own incompatibility checks, as in setup()
    adapter, tokens, width = make_adapter(MODEL, reduced, device, dtype)
    adapter.sampling = preset.sampling.replace(height=res, width=res)
    null = conditioning(MODEL, 1, tokens, width, device, dtype)
    # no text encoders: the empty prompt's conditioning (the CFG branch) is a random one of its shape
    adapter.null_conditioning = lambda n: null.repeat(n)  # type: ignore[method-assign]
    t.preset, t.adapter, t.device, t.world, t.rank, t.epoch = preset, adapter, device, 1, 0, 0
    t.infer_steps = preset.sampling.steps
    t.steps = t._method_cls.rollout_steps(cfg) or t.infer_steps
    t.schedule = adapter.schedule(t.steps, spacing=cfg.model.spacing)
    t.sigmas, t.model_sigmas = t.schedule.sigmas.float(), t.schedule.model_sigmas.float()
    t.train_steps = trainable_steps(t.sigmas, cfg.method.min_step)
    t.shift = cfg.method.shift if cfg.method.shift is not None else adapter.sampling.shift
    t.method = t._build_method()
    return t, conditioning(MODEL, micro, tokens, width, device, dtype)


def first_batch(t: Trainer, cond: Any, res: int, micro: int) -> Batch:
    """The epoch's first micro-batch, after ``begin_epoch`` (a real SDE rollout for Flow-GRPO)."""
    m, a = t.method, t.adapter
    c, h, w = a.latent_shape(res, res)
    g = torch.Generator().manual_seed(0)
    index = torch.arange(micro)
    group = index // t.cfg.rollout.group_size
    adv = torch.randn(micro, generator=g).clamp(-3, 3)
    log_probs = None
    if m.rollout_kind == "sde":
        noise = a.initial_noise(index.tolist(), res, res).to(t.device)
        lats, log_probs = sde_rollout(
            a,
            cond,
            noise,
            t.schedule,
            m.sde_plan(),
            index.tolist(),
            role=m.rollout_role,
            guidance=m.rollout_guidance,
        )
        latents = lats.cpu()
    else:  # only x0 = latents[:, -1] enters these losses
        latents = torch.randn(micro, t.steps + 1, c, h, w, generator=g)
    ro = Rollout(
        index=index,
        group=group,
        prompts=[""] * micro,
        metadata=[{} for _ in range(micro)],
        latents=latents,
        rewards=adv.clone(),
        details={},
        log_probs=log_probs,
    )
    m.begin_epoch(ro, adv)
    return Batch(0, 0, slice(0, micro), index, group, latents, adv, cond)


def micro_step(t: Trainer, batch: Batch) -> dict[str, float]:
    """The method's ``train_micro`` and one optimiser step per trainable role; mean metrics."""
    metrics = t.method.train_micro(batch)
    for role in t.opt:
        t._step(role)
    return {k: sum(v) / len(v) for k, v in metrics.items() if v}
