"""Group-exact TDM-R1 batching: whole groups per micro-batch, shared draws per group, every step works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tdm_r1.errors import ConfigError
from tdm_r1.testing import trainkit


def _record_surrogate_queries(monkeypatch: pytest.MonkeyPatch, trainer) -> list[dict]:
    """Wrap the trainer's surrogate query to record, per call, each sample's group, boundary and draws."""
    import tdm_r1.train.methods.tdm_r1 as mod

    calls: list[dict] = []
    real_renoise = mod.renoise
    real_errors = trainer.method._surrogate_errors

    def errors(lat, cond, groups, blk, j_draw):
        box: dict = {"groups": groups.tolist(), "blk": blk}

        def renoise(x_n, s_n, s_tau, eps):
            box.update(s_n=s_n.tolist(), s_tau=s_tau.tolist(), eps=eps.flatten(1)[:, :4].tolist())
            return real_renoise(x_n, s_n, s_tau, eps)

        monkeypatch.setattr(mod, "renoise", renoise)
        try:
            out = real_errors(lat, cond, groups, blk, j_draw)
        finally:
            monkeypatch.setattr(mod, "renoise", real_renoise)
        box["j"] = out[0]
        calls.append(box)
        return out

    monkeypatch.setattr(trainer.method, "_surrogate_errors", errors)
    return calls


def _assert_shared_within_groups(calls: list[dict]) -> None:
    per_group: dict[tuple[int, int], set] = {}
    for call in calls:
        for i, g in enumerate(call["groups"]):
            key = (call["blk"], g)
            draw = (call["j"], call["s_n"][i], call["s_tau"][i], tuple(call["eps"][i]))
            per_group.setdefault(key, set()).add(draw)
    assert per_group and all(len(d) == 1 for d in per_group.values()), per_group


def test_micro_batches_hold_whole_groups_with_shared_draws(
    registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 groups of 4, micro-batch 8: each micro-batch is 2 whole groups; a group shares j, sigma, noise."""
    from tdm_r1.train.trainer import Trainer

    cfg = trainkit.small_config(
        tmp_path, rollout={"prompts_per_epoch": 4, "group_size": 4}, method={"micro_batch": 8}
    )
    t = Trainer(cfg)
    t.setup()
    plan = t.plan(0)
    g = cfg.rollout.group_size
    for start in range(0, len(plan.order), cfg.method.micro_batch):
        groups = [i // g for i in plan.order[start : start + cfg.method.micro_batch]]
        assert all(groups.count(k) == g for k in set(groups)), groups  # whole groups only
    assert sorted(plan.order) == list(range(cfg.samples_per_epoch))
    assert [i // g for i in plan.order] != sorted(i // g for i in plan.order)  # groups are shuffled
    calls = _record_surrogate_queries(monkeypatch, t)
    t.train_epoch()
    assert len(calls) == 2 and all(len(set(c["groups"])) == 2 for c in calls)
    _assert_shared_within_groups(calls)


def test_a_group_larger_than_a_micro_batch_is_one_block(
    registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group 8 over micro-batches of 4: the pieces share the draws, and the weight uses the whole group."""
    import tdm_r1.train.methods.tdm_r1 as mod
    from tdm_r1.train.trainer import Trainer

    cfg = trainkit.small_config(
        tmp_path,
        rollout={"prompts_per_epoch": 2, "group_size": 8, "batch_size": 8},
        method={"micro_batch": 4},
        optim={"grad_accum": 2},
    )
    t = Trainer(cfg)
    t.setup()
    assert t.cfg.micro_per_block == 2
    sums_seen: list[torch.Tensor] = []
    real_loss = mod.surrogate_loss

    def loss(*args, **kwargs):
        sums_seen.append(kwargs["group_sum"])
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(mod, "surrogate_loss", loss)
    calls = _record_surrogate_queries(monkeypatch, t)
    t.train_epoch()
    # 4 micro-batches = 2 blocks; each block is scored whole first (2 calls), then trained piece by piece
    assert len(sums_seen) == 4 and all(s is not None for s in sums_seen)
    assert torch.equal(sums_seen[0], sums_seen[1]) and torch.equal(sums_seen[2], sums_seen[3])
    _assert_shared_within_groups(calls)
    assert len(calls) == 8


def test_block_weights_equal_the_whole_group_computation() -> None:
    """Training a group in two pieces with the whole-group sum gives the gradient of the whole group."""
    from tdm_r1.losses.tdm_r1 import group_preference_sums, surrogate_loss

    torch.manual_seed(0)
    n = 8
    l_ref = torch.rand(n)
    adv = torch.randn(n)
    gi = torch.zeros(n, dtype=torch.long)
    kw = dict(n_groups=1, group_size=n, beta_dpo=5.0, clip_range=1.0, anchor_beta=0.0)
    whole = torch.rand(n, requires_grad=True)
    reg = torch.zeros(n)
    surrogate_loss(whole, l_ref, whole.detach(), reg, adv, gi, **kw).loss.backward()
    pieces = whole.detach().clone().requires_grad_(True)
    total = group_preference_sums(adv, pieces, l_ref, gi, 1)
    for sl in (slice(0, 4), slice(4, 8)):
        out = surrogate_loss(
            pieces[sl], l_ref[sl], pieces[sl].detach(), reg[sl], adv[sl], gi[sl], group_sum=total, **kw
        )
        (out.loss / 2).backward()  # two accumulated micro-batches
    assert torch.allclose(whole.grad, pieces.grad, atol=1e-7)
    # a piece's own partial sum would give another weight: the old split-group behaviour was wrong
    half = group_preference_sums(adv[:4], pieces[:4], l_ref[:4], gi[:4], 1)
    assert not torch.allclose(half, total)


def test_split_groups_are_refused_with_the_knob_named(registered, tmp_path: Path) -> None:
    from tdm_r1.train.config import check_world

    with pytest.raises(ConfigError, match="method.micro_batch"):
        check_world(trainkit.small_config(tmp_path, rollout={"group_size": 4}, method={"micro_batch": 6}), 1)
    with pytest.raises(ConfigError, match="optim.grad_accum"):
        check_world(
            trainkit.small_config(
                tmp_path,
                rollout={"prompts_per_epoch": 2, "group_size": 8},
                method={"micro_batch": 4},
                optim={"grad_accum": 1},
            ),
            1,
        )


@pytest.mark.parametrize(
    ("spacing", "steps", "trained"),
    [("flowmatch", 4, [0, 1, 2]), ("zero-terminal", 5, [0, 1, 2, 3]), ("trailing", 4, [0, 1, 2, 3])],
)
def test_zero_or_near_zero_steps_are_never_trained(spacing: str, steps: int, trained: list[int]) -> None:
    from tdm_r1.schedule import flow_schedule
    from tdm_r1.train.config import trainable_steps

    sig = flow_schedule(steps, spacing=spacing).sigmas
    assert trainable_steps(sig, 0.005) == trained
    if spacing == "trailing":  # each of the K passes covers 1/K of the time
        assert torch.allclose(sig[:-1] - sig[1:], torch.full((steps,), 1 / steps))


def test_trainer_draws_only_working_steps(
    registered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdm_r1.train.trainer import Trainer

    cfg = trainkit.small_config(
        tmp_path, model={"steps": 3, "spacing": "zero-terminal"}, method={"num_train_timesteps": 2}
    )
    t = Trainer(cfg)
    t.setup()
    assert t.train_steps == [0, 1]  # sigmas 1, 0.5, 0, 0: the last step has zero length
    seen: list[int] = []
    real = t.method.fake_step
    monkeypatch.setattr(t.method, "fake_step", lambda batch, j: seen.append(j) or real(batch, j))
    t.train_epoch()
    assert seen and set(seen) <= {0, 1}


def test_run_summary_says_what_stopped_the_run(registered, tmp_path: Path, caplog) -> None:
    from tdm_r1.train.trainer import Trainer

    run = Trainer(trainkit.small_config(tmp_path / "a", max_epochs=1)).fit()
    assert json.loads((run / "run.json").read_text())["stopped_by"] == "max_epochs"
    with caplog.at_level("WARNING"):
        run = Trainer(trainkit.small_config(tmp_path / "b", max_epochs=5, max_minutes=1e-9)).fit()
    summary = json.loads((run / "run.json").read_text())
    assert summary["stopped_by"] == "max_minutes" and summary["epochs"] == 1
    assert "safety cap" in caplog.text


def test_generator_ema_warms_up(registered, tmp_path: Path) -> None:
    from tdm_r1.train.trainer import Trainer

    t = Trainer(trainkit.small_config(tmp_path))
    t.setup()
    assert t.ema.warmup and t.ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
