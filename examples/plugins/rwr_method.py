"""A training method from outside the package: reward-weighted regression (RWR) on the generator.

The walk-through of docs/extending.md ("Add an RL method"), run by tests/train/test_method_plugin.py.
RWR (Peters & Schaal, ICML 2007; for text-to-image models: Lee et al., arXiv:2302.12192) regresses
the model onto its own samples, each weighted by ``exp(advantage / beta)``: flow matching on the
rollout's final latents x0 at one of the generator's own noise levels, so better-than-average
images of a prompt pull harder. It needs no extra LoRA role and no reference copy.

Load it for any command with ``tdmbench --plugin rwr_method ...`` (the folder on ``PYTHONPATH``,
or the current directory): ``train --method rwr``, ``ls methods``, ``arena --methods rwr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tdm_r1.errors import ConfigError
from tdm_r1.flow import noised
from tdm_r1.registry import register_method
from tdm_r1.seeds import rows_randn
from tdm_r1.train.methods import common
from tdm_r1.train.methods.base import GEN, Batch, RoleSpec, TrainingMethod, record

HERE = Path(__file__).resolve().parent


@dataclass
class RwrOptions:
    """``method.rwr``: the method's own options (a config section of this type)."""

    #: Temperature of the weights exp(advantage / beta).
    beta: float = 1.0
    #: Largest weight (before the micro-batch normalisation): one lucky image cannot dominate.
    max_weight: float = 10.0


@register_method(
    "rwr",
    options=RwrOptions,
    section="rwr",
    toy_recipes={"toy-4step": str(HERE / "toy-rwr-4step-{reward}.yaml")},
)
class Rwr(TrainingMethod):
    """Reward-weighted regression: flow matching on the generator's own samples, weighted by exp(A / beta)."""

    name = "rwr"

    @classmethod
    def check(cls, cfg, preset) -> None:
        o = cfg.method.rwr
        if o.beta <= 0 or o.max_weight < 1:
            raise ConfigError(f"rwr: method.rwr.beta must be > 0 and max_weight >= 1, got {o}")

    def roles(self) -> list[RoleSpec]:
        return [common.generator_spec(self.cfg)]

    def train_micro(self, batch: Batch) -> dict[str, list[float]]:
        loop, o = self.loop, self.cfg.method.rwr
        x0 = batch.latents[:, -1].to(loop.device)  # (n, C, h, w): the rollout's final latents
        n = x0.shape[0]
        j = loop.train_steps[batch.micro % len(loop.train_steps)]  # one of the generator's own steps
        eps = rows_randn(loop.row_seeds("rwr-eps", (j,), batch.sample_keys), tuple(x0.shape[1:]))
        x_t = noised(x0, common.full(loop, n, loop.sigmas[j]), eps.to(loop.device))
        v = loop.adapter.velocity(x_t, common.full(loop, n, loop.model_sigmas[j]), batch.cond, role=GEN)
        err = ((v.float() - (eps.to(loop.device) - x0)) ** 2).flatten(1).mean(1)  # (n,)
        w = torch.exp(batch.adv.to(loop.device) / o.beta).clamp(max=o.max_weight)
        w = w / w.mean()  # (n,) mean 1: the step size does not depend on the rewards' scale
        loss = (w * err).mean()
        loop.backward(loss, GEN)
        out: dict[str, list[float]] = {}
        record(out, {"gen_loss": float(loss.detach()), "rwr_weight_max": float(w.max())})
        return out
