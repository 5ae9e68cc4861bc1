"""Gradient checkpointing recomputes each block with the role of its forward (issue "five traps", 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.checkpoint import CheckpointError

from tdm_r1.models.sd3 import SD3Adapter
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.testing.tiny import tiny_sd3_pipeline

ROLES = ("generator", "fake")


def _adapter() -> SD3Adapter:
    ad = SD3Adapter.from_pipeline(tiny_sd3_pipeline(seed=0), sampling=SamplingSpec(steps=2), device="cpu")
    g = torch.Generator().manual_seed(4)
    for role in ROLES:
        ad.roles.add(role, rank=4, alpha=4.0)
        with torch.no_grad():  # B != 0: each role changes the output
            for p in ad.roles.parameters(role):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return ad


def _grads(ad: SD3Adapter, active_at_backward: str | None) -> list[torch.Tensor]:
    """Gradients of a loss over both roles' velocities, backward run with another role active."""
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = ad.encode_prompts(["a cat", "a dog"])
    loss = sum(ad.velocity(x, 0.6, cond, role=r).square().mean() * (i + 1) for i, r in enumerate(ROLES))
    with ad.roles.use(active_at_backward):
        loss.backward()
    out = [p.grad.clone() for r in ROLES for p in ad.roles.parameters(r)]
    for r in ROLES:
        for p in ad.roles.parameters(r):
            p.grad = None
    return out


def test_diffusers_default_checkpointing_breaks_outside_the_role() -> None:
    ad = _adapter()
    ad.transformer.enable_gradient_checkpointing()  # what the trainer did before
    with pytest.raises(CheckpointError):
        _grads(ad, None)


@pytest.mark.parametrize("active", [None, "generator", "fake"])
def test_role_checkpointing_gives_the_plain_gradients_whatever_is_active(active: str | None) -> None:
    ad = _adapter()
    want = _grads(ad, None)  # no checkpointing
    ad.roles.enable_gradient_checkpointing()
    got = _grads(ad, active)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want, strict=True))
    assert ad.roles.active is None


METHODS = {
    "tdm-r1": {},
    "distill": {"rewards": {}, "rollout": {"group_size": 1, "prompts_per_epoch": 8}},
    "flow-grpo": {"method": {"name": "flow-grpo", "flow_grpo": {"rollout_steps": 4, "clip_range": 1e-2}}},
    "diffusionnft": {"method": {"name": "diffusionnft", "diffusionnft": {"rollout_steps": 4}}},
    "dgpo": {
        "method": {"name": "dgpo", "dgpo": {"rollout_steps": 4, "num_train_timesteps": 2, "trunc_steps": 2}}
    },
}


# TDM-R1 (three trained roles and a frozen copy) in the default suite; every other method under
# `make test-slow` (each takes 30-110 s on 2 loaded cores).
@pytest.mark.parametrize(
    "method", [m if m == "tdm-r1" else pytest.param(m, marks=pytest.mark.slow) for m in METHODS]
)
def test_every_method_steps_the_same_with_checkpointing(
    registered: Path, tmp_path: Path, method: str
) -> None:
    """One epoch of each method, several roles each, with and without checkpointing: the same weights."""
    from tdm_r1.config import merge
    from tdm_r1.testing import trainkit
    from tdm_r1.train.trainer import Trainer

    after = {}
    for ckpt in (False, True):
        changes = merge(
            METHODS[method], {"model": {"gradient_checkpointing": ckpt, "generator_init": "gaussian"}}
        )
        t = Trainer(trainkit.small_config(tmp_path / str(ckpt), **changes))
        t.setup()
        assert len(t.adapter.roles) >= 2
        t.train_epoch()
        after[ckpt] = {r: [p.detach().clone() for p in t.adapter.role_parameters(r)] for r in t.adapter.roles}
    for role, tensors in after[False].items():
        for a, b in zip(tensors, after[True][role], strict=True):
            assert torch.allclose(a, b, atol=1e-5), (method, role)
