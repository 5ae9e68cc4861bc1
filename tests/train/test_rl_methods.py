"""Flow-GRPO, DiffusionNFT and direct DGPO as plug-ins of the training loop, on the tiny SD3 pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tdm_r1.errors import ConfigError
from tdm_r1.testing import trainkit

RL = ("flow-grpo", "diffusionnft", "dgpo")

#: small per-method options: a 4-step rollout on the tiny 2-step preset (denoising "reduction" upwards)
OPTIONS: dict[str, dict[str, Any]] = {
    "flow-grpo": {"flow_grpo": {"rollout_steps": 4, "clip_range": 1e-2}},
    "diffusionnft": {"diffusionnft": {"rollout_steps": 4}},
    "dgpo": {"dgpo": {"rollout_steps": 4, "num_train_timesteps": 2, "trunc_steps": 2, "beta_dpo": 10.0}},
}


def _config(tmp: Path, name: str, **changes: Any) -> Any:
    m = {"name": name, **{k: dict(v) for k, v in OPTIONS.get(name, {}).items()}}
    for key, val in changes.pop("method", {}).items():
        if isinstance(val, dict):
            m.setdefault(key, {}).update(val)
        else:
            m[key] = val
    return trainkit.small_config(tmp, method=m, **changes)


def _snapshot(trainer) -> dict[str, list[torch.Tensor]]:
    return {
        r: [p.detach().clone() for p in trainer.adapter.role_parameters(r)] for r in trainer.adapter.roles
    }


def _moved(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(float((x - y).abs().sum()) for x, y in zip(a, b, strict=True))


@pytest.fixture
def cfg_preset(registered):
    """A tiny base-kind preset sampled with CFG 2 (it has an unconditional branch)."""
    from tdm_r1.models.preset import ModelPreset, register_preset
    from tdm_r1.models.spec import SamplingSpec
    from tdm_r1.registry import MODELS

    added = []
    for name, changes in {
        "tiny-cfg": {"kind": "base", "guidance": 2.0},
        "tiny-dpm": {"solver": "dpmsolver++"},
    }.items():
        sampling = {k: changes.pop(k) for k in ("guidance", "solver") if k in changes}
        spec = SamplingSpec(
            **({"steps": 2, "guidance": 1.0, "shift": 1.0, "height": 32, "width": 32} | sampling)
        )
        base = dict(family="sd3", hub_id=str(registered), sampling=spec, kind="distilled", dtype="float32")
        register_preset(ModelPreset(name=name, **(base | changes)))
        added.append(name)
    yield registered
    for n in added:
        MODELS._entries.pop(n, None)
        MODELS._alias.pop(n, None)


@pytest.mark.parametrize("method", RL)
def test_one_epoch_moves_the_generator_and_nothing_frozen(registered, tmp_path: Path, method: str) -> None:
    from tdm_r1.train.trainer import Trainer

    # a generator that does not start as the base: the reference is then a frozen copy of its start
    t = Trainer(_config(tmp_path, method, model={"generator_init": "gaussian"}))
    t.setup()
    expected = {
        "flow-grpo": {"generator", "reference"},
        "diffusionnft": {"generator", "old", "reference"},
        "dgpo": {"generator", "old", "reference"},
    }[method]
    assert set(t.adapter.roles) == expected and set(t.opt) == {"generator"}
    assert t.steps == 4 and t.infer_steps == 2  # the rollout's steps, the model's own for export
    base = {n: p.detach().clone() for n, p in t.adapter.transformer.named_parameters() if "lora_" not in n}
    before = _snapshot(t)
    assert _moved(before["reference"], before["generator"]) == 0  # the copy starts equal
    metrics = t.train_epoch()
    after = _snapshot(t)
    assert _moved(after["generator"], before["generator"]) > 0
    assert _moved(after["reference"], before["reference"]) == 0
    for n, p in t.adapter.transformer.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n]), f"frozen base weight {n} changed"
    if "old" in expected:  # the sampling / clip copy follows the generator, lagging behind it
        assert (
            0 < _moved(after["old"], before["old"]) <= _moved(after["generator"], before["generator"]) + 1e-6
        )
    assert math.isfinite(metrics["reward_mean"]) and math.isfinite(metrics["gen_loss"])
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics
    assert t.updates["generator"] == 2  # 8 samples, micro-batches of 4, grad_accum 1


def test_flow_grpo_on_policy_ratio_is_one(registered, tmp_path: Path) -> None:
    """The stored log-prob of every SDE step equals step_log_prob recomputed with unchanged weights."""
    from tdm_r1.train.methods.base import Batch
    from tdm_r1.train.trainer import Trainer

    t = Trainer(_config(tmp_path, "flow-grpo", rollout={"batch_size": 8}))
    t.setup()
    ro = t.rollout(t.plan(0))
    assert ro.log_probs is not None and ro.log_probs.shape == (8, 4)
    assert (
        torch.isfinite(ro.log_probs[:, :3]).all() and torch.isnan(ro.log_probs[:, 3]).all()
    )  # last step ODE
    batch = Batch(
        0,
        0,
        slice(0, 8),
        ro.index,
        ro.group,
        ro.latents,
        torch.zeros(8),
        t.adapter.encode_prompts(ro.prompts),
    )
    for k in range(3):
        with torch.no_grad():
            lp, _ = t.method.step_log_prob(batch, k)
        torch.testing.assert_close(lp, ro.log_probs[:, k], rtol=0, atol=1e-6)
    # the step noise comes from a named stream per (step, sample)
    from tdm_r1.losses.sde import flow_sde_mean_std
    from tdm_r1.seeds import Stream, rows_randn
    from tdm_r1.train.rollout import guided_velocity

    x = ro.latents[:, 1]
    with torch.no_grad():
        v = guided_velocity(
            t.adapter,
            x,
            torch.full((8,), float(t.model_sigmas[1])),
            batch.cond,
            role="generator",
            guidance=1.0,
        )
    mean, std, _ = flow_sde_mean_std(
        x, float(t.sigmas[1]), float(t.sigmas[2]), v, 0.7, sigma_max=float(t.sigmas[1])
    )
    eps = rows_randn(t.row_seeds(Stream.SDE, (1,), ro.index.tolist()), tuple(x.shape[1:]))
    torch.testing.assert_close(ro.latents[:, 2], mean + std * eps, rtol=0, atol=1e-5)
    # different samples of a group got different noise (the group is not collapsed)
    assert (ro.latents[0, -1] - ro.latents[1, -1]).abs().max() > 1e-3


def test_flow_grpo_fast_window_and_cps(registered, tmp_path: Path) -> None:
    """Fast: only a seeded window of consecutive steps is stochastic and trained (CPS steps)."""
    from tdm_r1.train.trainer import Trainer

    fast = {"sde": "cps", "noise_level": 0.8, "sde_window": 2, "sde_window_range": [0, 3], "beta_kl": 0.0}
    t = Trainer(_config(tmp_path, "flow-grpo", method={"flow_grpo": fast}))
    t.setup()
    assert t.method.backwards_per_micro == 2
    ro = t.rollout(t.plan(0))
    finite = torch.isfinite(ro.log_probs).all(dim=0).tolist()
    window = [k for k, f in enumerate(finite) if f]
    assert len(window) == 2 and window[1] == window[0] + 1 and window[1] <= 2, finite
    assert torch.isnan(ro.log_probs[:, [k for k in range(4) if k not in window]]).all()
    t.method.begin_epoch(ro, torch.zeros(8))
    assert t.method._steps == window
    metrics = t.train_epoch()
    assert math.isfinite(metrics["gen_loss"]) and metrics["ratio_mean"] == pytest.approx(1.0, abs=0.05)


def test_nft_learner_equals_its_sampler_at_the_start(registered, tmp_path: Path) -> None:
    """NFT's old copy starts as the generator: old_deviate is 0 on the first micro-batch."""
    from tdm_r1.train.methods.base import Batch
    from tdm_r1.train.trainer import Trainer

    t = Trainer(_config(tmp_path, "diffusionnft", model={"generator_init": "gaussian"}))
    t.setup()
    ro = t.rollout(t.plan(0))
    adv, _ = t.advantages(ro)
    batch = Batch(
        0,
        0,
        slice(0, 4),
        ro.index[:4],
        ro.group[:4],
        ro.latents[:4],
        adv[:4],
        t.adapter.encode_prompts(ro.prompts[:4]),
    )
    metrics = t.method.train_micro(batch)
    assert metrics["old_deviate"] == [0.0] * t.method.n_levels
    assert metrics["kl"] == [0.0] * t.method.n_levels  # the reference copy is the start too
    assert any(v != 0 for v in metrics["policy_loss"])


def test_flow_grpo_with_cfg_trains_the_guided_step(cfg_preset, tmp_path: Path) -> None:
    from tdm_r1.train.methods.base import Batch
    from tdm_r1.train.trainer import Trainer

    t = Trainer(_config(tmp_path, "flow-grpo", model={"name": "tiny-cfg"}, rollout={"batch_size": 8}))
    t.setup()
    assert t.method.rollout_guidance == 2.0
    ro = t.rollout(t.plan(0))
    batch = Batch(
        0,
        0,
        slice(0, 8),
        ro.index,
        ro.group,
        ro.latents,
        torch.zeros(8),
        t.adapter.encode_prompts(ro.prompts),
    )
    with torch.no_grad():
        lp, _ = t.method.step_log_prob(batch, 0)
    torch.testing.assert_close(lp, ro.log_probs[:, 0], rtol=0, atol=1e-6)
    t.method.guidance = 1.0  # the unguided step is another policy: its log-probs differ
    with torch.no_grad():
        lp1, _ = t.method.step_log_prob(batch, 0)
    assert (lp1 - ro.log_probs[:, 0]).abs().max() > 1e-4


def test_reward_methods_need_a_reward_and_distill_none(registered, tmp_path: Path) -> None:
    for method in RL:
        with pytest.raises(ConfigError, match="needs a reward"):
            _config(tmp_path, method, rewards={})
    with pytest.raises(ConfigError, match="without a reward"):
        _config(tmp_path, "distill")
    assert _config(tmp_path, "tdm-r1", rewards={}, rollout={"group_size": 1}).method_name == "distill"


@pytest.mark.parametrize(
    ("method", "changes", "match"),
    [
        ("flow-grpo", {"model": {"name": "tiny-dpm"}}, "Euler-Maruyama"),
        ("flow-grpo", {"method": {"flow_grpo": {"guidance": 3.0}}}, "no trained unconditional branch"),
        ("dgpo", {"method": {"dgpo": {"ref_guidance": 4.5}}}, "no trained unconditional branch"),
        ("dgpo", {"method": {"micro_batch": 2}, "optim": {"grad_accum": 0}}, "whole groups"),
        ("dgpo", {"method": {"dgpo": {"num_train_timesteps": 5}}}, "num_train_timesteps"),
        (
            "flow-grpo",
            {"method": {"flow_grpo": {"sde_window": 3, "sde_window_range": [2, 4]}}},
            "does not fit",
        ),
        ("flow-grpo", {"method": {"flow_grpo": {"sde": "dance"}}}, "sde must be"),
        ("diffusionnft", {"method": {"diffusionnft": {"beta": 0.0}}}, "beta must be > 0"),
    ],
)
def test_incompatibilities_fail_before_the_model_loads(
    cfg_preset, tmp_path: Path, method: str, changes: dict, match: str
) -> None:
    from tdm_r1.train.trainer import Trainer

    t = Trainer(_config(tmp_path, method, **changes))
    with pytest.raises(ConfigError, match=match):
        t.setup()
    assert not hasattr(t, "adapter")  # nothing was loaded


def test_a_too_short_sde_step_fails_before_the_rollout(registered, tmp_path: Path) -> None:
    """The model's own 2-step flowmatch grid ends with a 0.001 -> 0 step: full Flow-GRPO must not train it."""
    from tdm_r1.train.trainer import Trainer

    t = Trainer(
        _config(
            tmp_path, "flow-grpo", method={"flow_grpo": {"rollout_steps": None, "timestep_fraction": 1.0}}
        )
    )
    with pytest.raises(ConfigError, match="shorter than method.min_step"):
        t.setup()


def test_unknown_method_name_fails_at_setup(registered, tmp_path: Path) -> None:
    from tdm_r1.errors import UnknownNameError
    from tdm_r1.train.trainer import Trainer

    with pytest.raises(UnknownNameError):
        Trainer(_config(tmp_path, "flow-grpoo")).setup()


def _errors(t, ro, cond, sigma: float) -> torch.Tensor:
    """(n,) generator denoising errors of the final samples at one fixed noise and level."""
    from tdm_r1.seeds import rows_randn

    x0 = ro.latents[:, -1]
    eps = rows_randn(list(range(100, 100 + len(x0))), tuple(x0.shape[1:]))
    x_t = (1 - sigma) * x0 + sigma * eps
    with torch.no_grad():
        v = t.adapter.velocity(x_t, torch.full((len(x0),), sigma), cond, role="generator").float()
    return ((v - (eps - x0)) ** 2).flatten(1).mean(1)


@pytest.mark.parametrize("method", RL)
def test_one_update_favours_the_high_reward_samples(registered, tmp_path: Path, method: str) -> None:
    """After one update (no KL), the better samples gained likelihood: Flow-GRPO's stored transitions
    of positive advantage are more likely, NFT's and DGPO's denoising errors fall where A > 0."""
    from tdm_r1.train.methods.base import Batch
    from tdm_r1.train.trainer import Trainer

    kl_off = {
        "flow-grpo": {"flow_grpo": {"beta_kl": 0.0, "clip_range": 1.0}},
        "diffusionnft": {"diffusionnft": {"kl_beta": 0.0}},
    }
    kl_off["dgpo"] = {"dgpo": {"kl_beta": 0.0, "clip_range": 1.0}}
    t = Trainer(_config(tmp_path, method, method={"micro_batch": 8, **kl_off[method]}, optim={"lr": 1e-3}))
    t.setup()
    ro = t.rollout(t.plan(0))
    adv, _ = t.advantages(ro)
    assert adv.abs().sum() > 0
    cond = t.adapter.encode_prompts(ro.prompts)
    batch = Batch(0, 0, slice(0, 8), ro.index, ro.group, ro.latents, adv, cond)
    sigma = float(t.sigmas[1])
    if method == "flow-grpo":
        before = ro.log_probs[:, :3]
    else:
        before = _errors(t, ro, cond, sigma)
    t.method.begin_epoch(ro, adv)
    t.method.train_micro(batch)
    t._step("generator")
    if method == "flow-grpo":
        with torch.no_grad():
            after = torch.stack([t.method.step_log_prob(batch, k)[0] for k in range(3)], dim=1)
        gain = (adv[:, None] * (after - before)).sum()
        assert gain > 0, float(gain)
    else:
        change = (adv * (_errors(t, ro, cond, sigma) - before)).sum()
        assert change < 0, float(change)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["diffusionnft", "dgpo"])
def test_reward_goes_up(registered, tmp_path: Path, method: str) -> None:
    """A few epochs on the brightness reward make the generator's samples brighter.

    Flow-GRPO is left out: on the tiny pipeline a group's brightness varies by ~5e-4, so its
    policy gradient (driven by the SDE noise alone) is noise at this budget; its update direction
    is checked by :func:`test_one_update_favours_the_high_reward_samples`."""
    from tdm_r1.train.trainer import Trainer

    extra = {
        "flow-grpo": {"flow_grpo": {"beta_kl": 0.0, "clip_range": 1.0}},
        "diffusionnft": {"diffusionnft": {"kl_beta": 0.0}},
        "dgpo": {"dgpo": {"kl_beta": 0.0, "clip_range": 1.0}},
    }
    t = Trainer(
        _config(tmp_path, method, method=extra[method], optim={"lr": 5e-2}, max_epochs=8, checkpoint_every=0)
    )
    t.setup()
    rewards = [t.train_epoch()["reward_mean"] for _ in range(8)]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2, rewards


@pytest.mark.parametrize("method", RL)
def test_resume_continues_as_if_uninterrupted(registered, tmp_path: Path, method: str) -> None:
    """2 epochs in one go == 1 epoch, a checkpoint, a new process state, 1 more epoch (all roles)."""
    from tdm_r1.train.trainer import Trainer

    straight = Trainer(_config(tmp_path / "a", method))
    straight.setup()
    for _ in range(2):
        straight.train_epoch()
    first = Trainer(_config(tmp_path / "b", method))
    first.setup()
    first.train_epoch()
    first.save_checkpoint()
    resumed = Trainer(_config(tmp_path / "b", method))
    resumed.setup()
    assert resumed.epoch == 1
    resumed.train_epoch()
    for role in straight.adapter.roles:
        for x, y in zip(
            straight.adapter.role_parameters(role), resumed.adapter.role_parameters(role), strict=True
        ):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
