"""A training recipe's micro-step, composed from single-pass traces.

A method's ``train_micro`` (``tdm_r1/train/methods/*.py``) is a sequence of transformer passes on
one shared frozen base: no-grad queries of some roles, and forwards of a trainable role whose
activations are held until its backward, sometimes while more no-grad queries run (TDM-R1's
generator step queries the fake score, the teacher with CFG and the surrogate before its
backward). Each pass is traced once per batch size (:func:`tdm_r1.planning.steps.role_pass_body`)
and the micro-step is composed:

    peak = static + max over steps of max(before queries, grad forward,
                                          held + max(queries while held), backward)
    FLOPs = sum of the passes' FLOPs

``static`` = base transformer (bf16) + every role's LoRA (fp32) + gradients and AdamW state of the
trainable roles (fp32; gradients persist across accumulation) + the generator EMA (fp32) + the VAE
(bf16) + the text encoders unless offloaded (``model.offload_text_encoders``, default on). The
rollout (no-grad sampling, reward) peaks lower than the training step and is not modelled.
The pass counts below mirror each method's ``train_micro``; keep them in step with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tdm_r1.planning.workloads import FAMILY_OF_PRESET, ModelShape, model_shape


@dataclass(frozen=True)
class Step:
    """One trainable forward + backward at ``grad`` rows, the no-grad queries ``before`` it and
    ``during`` it (activations held), repeated ``count`` times per micro-step."""

    grad: int
    before: tuple[int, ...] = ()
    during: tuple[int, ...] = ()
    count: int = 1


@dataclass
class MicroStep:
    """What a recipe's micro-step does, from its config (no model loaded)."""

    recipe: str
    method: str
    shape: ModelShape
    resolution: int
    rank: int
    micro_batch: int  # per process
    grad_checkpointing: bool
    offload_text_encoders: bool
    trainable_roles: list[str]
    frozen_roles: list[str]
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ref_copy(cfg: Any, preset: Any) -> bool:
    """``common.needs_reference_copy``: a frozen copy unless the generator starts as the base."""
    return preset.lora is not None or cfg.model.generator_init != "zeros"


def micro_step(cfg: Any, preset: Any, num_processes: int = 1) -> MicroStep:
    """The passes of one micro-step of ``cfg`` (a :class:`~tdm_r1.train.config.TrainConfig`)."""
    from tdm_r1.losses.flow_grpo import train_steps as grpo_train_steps

    m, name = cfg.method, cfg.method.name
    n = max(1, m.micro_batch // num_processes)
    res = int(cfg.model.height or preset.sampling.height or 512)
    steps_k = cfg.model.steps or preset.sampling.steps
    out = MicroStep(
        recipe=cfg.name,
        method=name,
        shape=model_shape(FAMILY_OF_PRESET[preset.family]),
        resolution=res,
        rank=cfg.model.lora_rank,
        micro_batch=n,
        grad_checkpointing=cfg.model.gradient_checkpointing,
        offload_text_encoders=cfg.model.offload_text_encoders,
        trainable_roles=["generator"],
        frozen_roles=[],
    )
    if name in ("tdm-r1", "distill"):
        reward = name == "tdm-r1" and bool(cfg.rewards)
        out.trainable_roles += ["fake"] + (["surrogate"] if reward else [])
        if reward:
            out.frozen_roles += ["surrogate_old"] + (["reference"] if m.reference == "ema" else [])
        t = m.num_train_timesteps
        fake = Step(n, before=(n, n) if m.fake_anchor else (n,), count=t)  # GEN query, base anchor
        during = [n, 2 * n]  # fake score; teacher cond + uncond
        if reward and m.surrogate_term:  # on boundaries j < trunc_steps: all of a 4-step student's
            during += [2 * n if m.rl_cfg != 1.0 else n, n]  # surrogate with rl_cfg; reference
        out.steps += [fake, Step(n, during=tuple(during), count=t)]
        if reward:
            out.steps.insert(1, Step(n, before=(n, n), count=t))  # reference + fast-EMA copy queries
            if cfg.micro_per_block > 1:
                out.notes.append(
                    "a group spans micro-batches: block_group_sums adds no-grad passes (not counted)"
                )
    elif name == "flow-grpo":
        o = m.flow_grpo
        k = o.rollout_steps or steps_k
        n_train = o.sde_window or len(grpo_train_steps(k, timestep_fraction=o.timestep_fraction))
        g = float(preset.sampling.guidance if o.guidance is None else o.guidance)
        rows = 2 * n if g != 1.0 else n
        ref = o.beta_kl and _ref_copy(cfg, preset)
        out.frozen_roles += ["reference"] if ref else []
        out.steps.append(Step(rows, during=(rows,) if o.beta_kl else (), count=n_train))
        out.notes.append(f"{n_train} stochastic steps per micro-batch, CFG {g:g} in the trained pass")
    elif name == "diffusionnft":
        o = m.diffusionnft
        levels = int((o.rollout_steps or steps_k) * o.timestep_fraction)
        out.frozen_roles += ["old"] + (["reference"] if o.kl_beta and _ref_copy(cfg, preset) else [])
        out.steps.append(Step(n, before=(n, n) if o.kl_beta else (n,), count=max(1, levels)))
    elif name == "dgpo":
        o = m.dgpo
        out.frozen_roles += ["old"] + (["reference"] if _ref_copy(cfg, preset) else [])
        ref_rows = 2 * n if o.ref_guidance != 1.0 else n
        out.steps.append(Step(n, before=(ref_rows, n), count=o.num_train_timesteps))
    else:
        raise ValueError(f"the planner has no pass model for method {name!r}")
    return out


def load_micro_step(config: str, num_processes: int = 1, overrides: list[str] | None = None) -> MicroStep:
    """Resolve a recipe (a shipped preset name or a YAML file) into its :class:`MicroStep`."""
    from tdm_r1.models.preset import resolve_model
    from tdm_r1.train.config import load_train_config

    cfg = load_train_config(config, overrides=overrides)
    return micro_step(cfg, resolve_model(cfg.model.name), num_processes)
