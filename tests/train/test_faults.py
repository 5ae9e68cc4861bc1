"""Training under faults: killed or failed saves, damaged checkpoints, changed configs on resume."""

from __future__ import annotations

import errno
import json
import pathlib
import shutil
from pathlib import Path

import pytest

from tdm_r1.errors import ConfigError
from tdm_r1.testing import trainkit
from tdm_r1.train import checkpoint
from tdm_r1.train.checkpoint import CheckpointError


def _fit(tmp: Path, **changes):
    from tdm_r1.train.trainer import Trainer

    return Trainer(trainkit.small_config(tmp, **changes)).fit()


def test_partial_checkpoints_are_cleaned_on_start(registered, tmp_path: Path) -> None:
    from tdm_r1.train.trainer import Trainer

    run = _fit(tmp_path, max_epochs=1)
    partial = run / "checkpoints" / ".tmp-step-00000002-123"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"half")
    t = Trainer(trainkit.small_config(tmp_path, max_epochs=2))
    t.setup()
    assert not partial.exists() and t.epoch == 1


def test_a_full_disk_keeps_the_last_checkpoint_and_says_what_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    state = {"w": torch.zeros(1000)}
    first = checkpoint.save(tmp_path, 1, state)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=100))
    with pytest.raises(
        CheckpointError, match=r"no space left on .*: [\d.]+ KB needed, 100 B free.*step-00000001"
    ):
        checkpoint.save(tmp_path, 2, state)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real_usage)

    def full(self, data):  # the disk fills during the write itself
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    with pytest.raises(CheckpointError, match="no space left on"):
        checkpoint.save(tmp_path, 2, state)
    monkeypatch.undo()
    assert checkpoint.complete(tmp_path) == [first] and not list(tmp_path.glob(".tmp-*"))
    assert torch.equal(checkpoint.load(first)["w"], state["w"])


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(
    registered, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tdm_r1.train.trainer import Trainer

    run = _fit(tmp_path, max_epochs=2, checkpoint_every=1)
    ckpts = checkpoint.complete(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step-00000001", "step-00000002"]
    data = (ckpts[-1] / "state.pt").read_bytes()
    (ckpts[-1] / "state.pt").write_bytes(data[: len(data) // 2])
    t = Trainer(trainkit.small_config(tmp_path, max_epochs=3, checkpoint_every=1))
    with caplog.at_level("WARNING"):
        t.setup()
    assert t.epoch == 1
    assert "skipping checkpoint step-00000002" in caplog.text and "truncated" in caplog.text
    (ckpts[0] / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*step-00000001"):
        Trainer(trainkit.small_config(tmp_path, max_epochs=3)).setup()


def test_resume_with_another_config_is_refused_and_the_old_config_kept(registered, tmp_path: Path) -> None:
    from tdm_r1.train.trainer import Trainer

    run = _fit(tmp_path, max_epochs=1)
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"another config \(method\.beta_dpo: 1\.0 -> 3\.0; seed: 0 -> 1\)"):
        Trainer(trainkit.small_config(tmp_path, method={"beta_dpo": 3.0}, seed=1)).setup()
    assert (run / "config.yaml").read_text() == before
    t = Trainer(trainkit.small_config(tmp_path, max_epochs=2, eval_limit=3))  # safe to change
    t.setup()
    assert t.epoch == 1 and "max_epochs: 2" in (run / "config.yaml").read_text()


def test_checkpoint_every_zero_means_only_at_the_end(registered, tmp_path: Path) -> None:
    run = _fit(tmp_path, max_epochs=2, checkpoint_every=0)
    assert [p.name for p in checkpoint.complete(run / "checkpoints")] == ["step-00000002"]
    with pytest.raises(ConfigError, match="checkpoint_every must be >= 0"):
        trainkit.small_config(tmp_path, checkpoint_every=-1)


def test_resume_sees_the_toy_task_order() -> None:
    """The toy sampler draws tasks in the order of data.toy_tasks: the same weights in another order
    draw other prompts, so a resume must not take them for the same config."""
    from tdm_r1.train.resume import config_differences

    old = {"data": {"toy_tasks": {"single_object": 1.0, "colors": 0.5}}, "seed": 0}
    same = {"data": {"toy_tasks": {"single_object": 1.0, "colors": 0.5}}, "seed": 0}
    swapped = {"data": {"toy_tasks": {"colors": 0.5, "single_object": 1.0}}, "seed": 0}
    assert config_differences(old, same) == []
    assert config_differences(old, swapped) == [
        (
            "data.toy_tasks",
            [["single_object", 1.0], ["colors", 0.5]],
            [["colors", 0.5], ["single_object", 1.0]],
        )
    ]


def test_a_run_started_before_a_field_existed_resumes_when_the_field_is_at_its_default(
    tmp_path: Path,
) -> None:
    """A field added to TrainConfig later (its default keeps the old behaviour) does not stop a
    resume; the same field away from its default, or a changed old field, still does."""
    import yaml

    from tdm_r1.config import to_dict
    from tdm_r1.train.config import TrainConfig
    from tdm_r1.train.resume import check_resume

    new = to_dict(TrainConfig())
    old = json.loads(json.dumps(new, default=str))
    del old["method"]["num_train_timesteps"]  # as if the run predates the field
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    # accepted, and reported (the caller logs it and rewrites config.yaml)
    assert check_resume(tmp_path, new) == [("method.num_train_timesteps", "(absent)", 2)]
    changed = json.loads(json.dumps(new, default=str))
    changed["method"]["num_train_timesteps"] = 99
    with pytest.raises(ConfigError, match=r"method.num_train_timesteps: '\(absent\)' -> 99"):
        check_resume(tmp_path, changed)
    old["seed"] = 7
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match="seed: 7 -> 42"):
        check_resume(tmp_path, new)


def test_a_failing_scheduled_evaluation_loses_no_training(registered, tmp_path: Path, monkeypatch) -> None:
    """The evaluation at an eval_every epoch fails: the epoch is still recorded and checkpointed,
    so a resume continues after it instead of redoing the epochs since the last checkpoint."""
    from tdm_r1.train.trainer import Trainer

    def broken(self, tag, exported=None):
        raise RuntimeError(f"evaluation {tag} failed")

    monkeypatch.setattr(Trainer, "evaluate", broken)
    cfg = trainkit.small_config(
        tmp_path, max_epochs=3, checkpoint_every=0, eval_every=2, eval_benchmarks=["toy-ocr"]
    )
    with pytest.raises(RuntimeError, match="evaluation epoch-2 failed"):
        Trainer(cfg).fit()
    assert [p.name for p in checkpoint.complete(cfg.run_dir() / "checkpoints")] == ["step-00000002"]
    rows = (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
