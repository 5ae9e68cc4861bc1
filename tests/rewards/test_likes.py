"""The likes / likes-sim rewards: policies, resume, offline labels, simulated raters, NaN flow."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tdm_r1.errors import ConfigError, WaitTimeoutError
from tdm_r1.label.db import LabelDB, LabelDBError, RunMismatchError
from tdm_r1.label.records import LockedError
from tdm_r1.rewards.base import RewardOutput, build_reward
from tdm_r1.rewards.likes import budget_pick, png_bytes

pytest.importorskip("fastapi")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _likes(**opts: Any) -> Any:
    return build_reward({"likes": 1.0}, options={"likes": opts})


def _rate_when_pending(db_path: Path, rule: dict[str, list[int | None]], stop: threading.Event) -> None:
    """A rater on the database: labels each pending group by prompt (None = leave unlabelled).

    A write that meets a lock held past the busy timeout (a loaded machine) is retried on the next
    pass, as a person would click again: the rater must not die and leave the trainer waiting.
    """
    db = LabelDB(db_path)
    while not stop.is_set():
        try:
            for g in db.pending(limit=100):
                group = db.group(g["id"])
                for im, lab in zip(group["images"], rule[group["prompt"]], strict=True):
                    if lab is not None:
                        db.add_label(im["id"], "r0", lab, group_id=g["id"], client_id=f"{im['id']}-r0")
                db.set_status([g["id"]], "seen-by-test")
        except LockedError:  # locked past the busy timeout: try again (client ids make it idempotent)
            pass
        time.sleep(0.02)


def test_wait_policy_blocks_until_labelled_and_returns_like_rates(tmp_path: Path) -> None:
    path = tmp_path / "likes.sqlite"
    reward = _likes(db=str(path), policy="wait")
    prompts = ["a", "a", "a", "b", "b"]
    rule = {"a": [1, 0, 1], "b": [0, 0]}
    stop = threading.Event()
    rater = threading.Thread(target=_rate_when_pending, args=(path, rule, stop), daemon=True)
    rater.start()
    out = reward(images=_images(5), prompts=prompts, metadata=[{}] * 5)
    stop.set()
    assert out.scores.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert out.details["raters"].tolist() == [1] * 5 and out.details["nan_reason"] == [""] * 5
    assert len(set(out.details["group"])) == 2  # one group per prompt
    assert reward.labels_used == 5


def test_mean_over_raters_and_disagreement(tmp_path: Path) -> None:
    path = tmp_path / "likes.sqlite"
    reward = _likes(db=str(path), policy="timeout", timeout=5, raters=3)
    imgs = _images(2)
    db = LabelDB(path)
    gid, _ = db.add_group("p", png_bytes(imgs), source="trainer")  # what the reward will register
    ids = [im["id"] for im in db.group(gid)["images"]]
    for rater, labs in {"ann": [1, 1], "bob": [1, 0], "cy": [0, 0]}.items():
        for i, lab in zip(ids, labs, strict=True):
            db.add_label(i, rater, lab, group_id=gid)
    t0 = time.monotonic()
    out = reward(images=imgs, prompts=["p", "p"], metadata=[{}, {}])
    assert time.monotonic() - t0 < 4  # labels were there: no waiting
    assert out.scores.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert out.details["disagreement"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert db.stats()["groups"] == 1 and db.group(gid)["status"] == "done"


def test_timeout_policy_scores_unlabelled_images_nan_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "likes.sqlite"
    reward = _likes(db=str(path), policy="timeout", timeout=0.6)
    stop = threading.Event()
    threading.Thread(target=_rate_when_pending, args=(path, {"p": [1, None, 0]}, stop), daemon=True).start()
    t0 = time.monotonic()
    out = reward(images=_images(3), prompts=["p"] * 3, metadata=[{}] * 3)
    stop.set()
    assert 0.5 < time.monotonic() - t0 < 5
    assert out.scores[0] == 1.0 and out.scores[2] == 0.0 and torch.isnan(out.scores[1])
    assert "0 of 1 label(s) before the 0.6 s timeout" in out.details["nan_reason"][1]
    assert LabelDB(path).group(out.details["group"][0])["status"] == "expired"


def test_wait_policy_is_bounded_and_says_what_it_waited_for(tmp_path: Path) -> None:
    """No rater ever comes: the wait ends after ``max_wait`` with an error naming the database and
    the images, and the groups stay pending for a resumed run (nothing sent is lost)."""
    path = tmp_path / "likes.sqlite"
    reward = _likes(db=str(path), policy="wait", max_wait=0.5, poll=0.05)
    t0 = time.monotonic()
    with pytest.raises(WaitTimeoutError) as err:
        reward(images=_images(3), prompts=["a", "a", "b"], metadata=[{}] * 3)
    assert 0.5 <= time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "max_wait 0.5 s" in msg and str(path) in msg and "3 image(s) still unlabelled" in msg
    assert "\n" not in msg and "tdmbench label --db" in msg
    assert len(LabelDB(path).pending(limit=10)) == 2  # both groups still offered to raters
    with pytest.raises(ConfigError, match="max_wait"):
        _likes(db=str(tmp_path / "b.sqlite"), max_wait=float("inf"))


def test_budget_sends_a_resume_stable_fraction_of_groups(tmp_path: Path) -> None:
    path = tmp_path / "likes.sqlite"
    reward = _likes(db=str(path), policy="budget", budget=0.5, timeout=5)
    prompts = [f"prompt {k}" for k in range(40) for _ in range(2)]
    stop = threading.Event()
    threading.Thread(
        target=_rate_when_pending, args=(path, {p: [1, 0] for p in prompts}, stop), daemon=True
    ).start()
    out = reward(images=_images(80), prompts=prompts, metadata=[{}] * 80)
    stop.set()
    picked = [budget_pick(g, 0.5) for g in out.details["group"]]
    assert 0.25 < np.mean(picked) < 0.75
    for k, sent in enumerate(picked):
        assert torch.isnan(out.scores[k]) != sent
        if not sent:
            assert out.details["nan_reason"][k] == "not sent for labels (budget 0.5)"
    assert LabelDB(path).stats()["groups"] == sum(picked) // 2


def test_a_resumed_run_sends_no_group_twice_and_loses_no_label(tmp_path: Path) -> None:
    path = tmp_path / "likes.sqlite"
    imgs, prompts = _images(4), ["p", "p", "q", "q"]
    stop = threading.Event()
    threading.Thread(
        target=_rate_when_pending, args=(path, {"p": [1, 0], "q": [0, 1]}, stop), daemon=True
    ).start()
    # a bounded wait: a test must fail, not hang, if its rater cannot answer
    first = _likes(db=str(path), run="r", policy="timeout", timeout=120)(
        images=imgs, prompts=prompts, metadata=[{}] * 4
    )
    stop.set()
    before = LabelDB(path).stats()
    # the run is stopped; a new process builds the reward again and regenerates the same epoch
    again = _likes(db=str(path), run="r", policy="timeout", timeout=30)
    t0 = time.monotonic()
    second = again(images=imgs, prompts=prompts, metadata=[{}] * 4)
    assert time.monotonic() - t0 < 10
    assert second.scores.tolist() == first.scores.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert LabelDB(path).stats() == before  # no new group, no new label row
    with pytest.raises(RunMismatchError, match="belongs to run .r."):
        _likes(db=str(path), run="another-run")


def test_offline_labels_score_known_images_and_nan_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "likes.sqlite"
    imgs = _images(3)
    db = LabelDB(path)
    gid, _ = db.add_group("p", png_bytes(imgs[:2]))
    for k, im in enumerate(db.group(gid)["images"]):
        db.add_label(im["id"], "ann", k % 2, group_id=gid)
    before = db.stats()
    out = _likes(labels=str(path))(images=imgs, prompts=["p"] * 3, metadata=[{}] * 3)
    assert out.scores[:2].tolist() == [0.0, 1.0] and torch.isnan(out.scores[2])
    assert "not in the label database" in out.details["nan_reason"][2]
    assert LabelDB(path).stats() == before


def test_bad_options_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of db"):
        _likes()
    with pytest.raises(ConfigError, match="policy must be one of"):
        _likes(db=str(tmp_path / "x.sqlite"), policy="sometimes")
    with pytest.raises(ConfigError, match="budget=0.5 needs policy=budget"):
        _likes(db=str(tmp_path / "x.sqlite"), budget=0.5)
    with pytest.raises(LabelDBError, match="no label database"):
        _likes(labels=str(tmp_path / "missing.sqlite"))
    with pytest.raises(ConfigError, match="noise must be in"):
        build_reward(
            {"likes-sim": 1.0}, options={"likes-sim": {"db": str(tmp_path / "y.sqlite"), "noise": 0.9}}
        )


class _Const:
    """An underlying reward with a fixed score."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, *, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardOutput:
        return RewardOutput(torch.full((images.shape[0],), self.value), {})


def test_simulated_rater_noise_and_bias_are_what_they_say() -> None:
    from tdm_r1.label.simrater import SimDecider

    data = png_bytes(_images(600, seed=3))
    group = {"prompt": "p", "metadata": {}}
    assert all(SimDecider(_Const(1.0), rater="a")(group, data))
    assert not any(SimDecider(_Const(0.0), rater="a")(group, data))
    flipped = 1 - np.mean(SimDecider(_Const(1.0), rater="a", noise=0.25)(group, data))
    assert 0.19 < flipped < 0.31
    biased = np.mean(SimDecider(_Const(0.5), rater="a", bias=0.3)(group, data))
    assert 0.72 < biased < 0.88
    thresholded = SimDecider(_Const(0.85), rater="a", threshold=0.8)(group, data)
    assert all(thresholded)
    # the same rater, seed and image: the same answer (a resumed run gets the same labels)
    assert SimDecider(_Const(0.5), rater="a")(group, data) == SimDecider(_Const(0.5), rater="a")(group, data)


def test_likes_sim_over_toy_geneval_answers_through_the_app(tmp_path: Path) -> None:
    """Correct toy images are liked, wrong ones disliked; the labels arrived over HTTP."""
    from tdm_r1.apps.toybuild.render import render_batch
    from tdm_r1.toyworld.grammar import task_prompts

    a, b = task_prompts("single_object", "train")[:2]
    imgs = torch.from_numpy(render_batch([a] * 3 + [b] * 3, seed=0)).permute(0, 3, 1, 2).float() / 255
    path = tmp_path / "likes.sqlite"
    reward = build_reward({"likes-sim": 1.0}, options={"likes-sim": {"db": str(path), "raters": 2}})
    try:
        out = reward(images=imgs, prompts=[a["prompt"]] * 6, metadata=[a] * 6)
    finally:
        reward.close()
    assert out.scores.tolist() == [1.0] * 3 + [0.0] * 3
    assert out.details["raters"].tolist() == [2] * 6
    import sqlite3

    raters = {r for (r,) in sqlite3.connect(path).execute("SELECT DISTINCT rater FROM labels")}
    client_ids = [c for (c,) in sqlite3.connect(path).execute("SELECT client_id FROM labels")]
    assert raters == {"sim-0", "sim-1"} and all(c.startswith("sim:") for c in client_ids)


def test_nan_rewards_give_zero_advantage_and_a_finite_surrogate_loss() -> None:
    """What the trainer does with unlabelled images: no gradient from them, no NaN anywhere."""
    from tdm_r1.losses.advantages import group_advantages
    from tdm_r1.losses.tdm_r1 import surrogate_loss

    rewards = torch.tensor(
        [1.0, 0.0, float("nan"), 1.0, float("nan"), float("nan"), float("nan"), float("nan")]
    )
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for std in ("group", "global"):
        adv = group_advantages(rewards, groups, std=std)
        assert torch.isfinite(adv.values).all() and adv.nan_rewards == 5
        assert adv.values[2] == 0 and (adv.values[4:] == 0).all()
        assert adv.values[0] > 0 > adv.values[1]
    l_phi = torch.rand(8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    # old surrogate = current one (PPO ratio 1, nothing clipped), no drift from the reference
    out = surrogate_loss(
        l_phi, torch.full((8,), 0.5), l_phi.detach().clone(), torch.zeros(8), adv.values, groups,
        n_groups=2, group_size=4, beta_dpo=1.0, clip_range=0.2,
    )  # fmt: skip
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(l_phi.grad).all()
    assert (l_phi.grad[[2, 4, 5, 6, 7]] == 0).all() and l_phi.grad[0] > 0 > l_phi.grad[1]
