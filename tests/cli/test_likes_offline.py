"""``tdmbench train --reward likes --labels FILE`` (issue 15): offline training from a label
database collected earlier on the model's own samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.label.db import LabelDB
from tdm_r1.testing import trainkit
from tdm_r1.testing.clikit import one_line_error

pytest.importorskip("fastapi")
runner = CliRunner()


def test_labels_resolve_to_the_offline_likes_reward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tdm_r1.train.preflight as config

    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    db = tmp_path / "likes.sqlite"
    LabelDB(db).close()
    seen = []
    real = config.dry_run
    monkeypatch.setattr(config, "dry_run", lambda cfg, world: seen.append(cfg) or real(cfg, world))
    result = runner.invoke(app, ["train", "--labels", str(db), "--dry-run"])
    assert result.exit_code == 0, result.output
    (cfg,) = seen
    assert cfg.rewards == {"likes": 1.0}
    assert cfg.reward_options["likes"] == {"labels": str(db), "db": None}
    # a mix keeps its weights; the alias of likes is found too
    result = runner.invoke(
        app, ["train", "--reward", "human-likes=0.5", "--reward", "ocr=0.5", "--labels", str(db), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert seen[1].rewards == {"human-likes": 0.5, "ocr": 0.5}
    assert seen[1].reward_options["human-likes"]["labels"] == str(db)


def test_labels_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    missing = tmp_path / "nope.sqlite"
    one_line_error(runner.invoke(app, ["train", "--labels", str(missing)]), "nope.sqlite", "no such file")
    db = tmp_path / "likes.sqlite"
    LabelDB(db).close()
    one_line_error(
        runner.invoke(app, ["train", "--reward", "ocr", "--labels", str(db)]), "--reward likes", "ocr"
    )
    not_a_db = tmp_path / "notes.sqlite"
    not_a_db.write_text("hello")
    result = runner.invoke(app, ["train", "--labels", str(not_a_db), "--device", "cpu"])
    one_line_error(result, "notes.sqlite")
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made


def _epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_offline_replay_learns_from_the_online_runs_labels(registered: Path, tmp_path: Path) -> None:
    """An online run labelled by a simulated rater (like with probability = brightness), then
    ``tdmbench train --labels`` on that database with the same config and seed: the replay
    regenerates the same images, scores every one from the stored labels, and learns from them."""
    from tdm_r1.config import to_dict
    from tdm_r1.train.trainer import Trainer

    db = tmp_path / "likes.sqlite"
    sim = {"db": str(db), "run": "t", "base": "test-brightness", "noise": 0.0}
    online = trainkit.small_config(
        tmp_path, rewards={"likes-sim": 1.0}, reward_options={"likes-sim": sim}, max_epochs=1
    )
    Trainer(online).fit()
    stored = LabelDB(db, create=False, readonly=True).stats()["labels"]
    assert stored == online.samples_per_epoch
    before = db.read_bytes()

    replay = trainkit.small_config(tmp_path, output_dir=str(tmp_path / "replay"), max_epochs=1)
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump(to_dict(replay), sort_keys=False))  # toy_tasks order = draw order
    result = runner.invoke(app, ["train", "--config", str(path), "--reward", "likes", "--labels", str(db)])
    assert result.exit_code == 0, result.output
    (on,) = _epochs(tmp_path / "run")
    (off,) = _epochs(tmp_path / "replay")
    assert off["nan_rewards"] == 0  # every image was found among the stored labels
    assert 0.0 < on["reward_mean"] < 1.0  # likes and dislikes: the groups teach something
    for key in ("reward_mean", "reward_std", "zero_std_groups", "surrogate_loss"):
        assert off[key] == pytest.approx(on[key]), key  # the same labels, the same surrogate update
    assert db.read_bytes() == before  # read-only: nothing was written to the labels
