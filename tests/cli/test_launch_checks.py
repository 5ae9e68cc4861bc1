"""``train --num-processes N`` checks what it can once, in the launching process, before any child
starts or any run folder is written; a failed launch says whether anything was trained."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.errors import TdmError
from tdm_r1.testing.clikit import one_line_error

runner = CliRunner()


def test_the_readme_8_process_example_without_prompts_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    started = time.monotonic()
    result = runner.invoke(app, ["train", "--config", "sd3.5m-dgpo-ocr", "--num-processes", "8"])
    line = one_line_error(result, "prompts file data/ocr/train.txt (data.path) does not exist")
    assert "--set data.path=FILE" in line and "tdmbench data fetch" in line
    assert time.monotonic() - started < 60  # no process was started (8 would load torch 8 times)
    assert not (tmp_path / "runs").exists()


def test_a_failed_launch_offers_a_resume_only_with_a_checkpoint_and_removes_an_empty_run(
    sd35_train_prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tdm_r1.eval.launch as launch_mod

    monkeypatch.setenv("TDMBENCH_RUNS", str(sd35_train_prompts / "runs"))

    def fails(n, argv, **kw):
        raise TdmError(f"the {n}-process training run failed (exit code 1); see the messages above.")

    monkeypatch.setattr(launch_mod, "launch", fails)
    args = ["train", "--config", "sd3.5m-dgpo-ocr", "--num-processes", "8"]
    line = one_line_error(runner.invoke(app, args), "Nothing was trained")
    assert "resume" not in line
    run = sd35_train_prompts / "runs" / "sd3.5m-dgpo-ocr"
    assert not run.exists()  # the launch wrote only its config.yaml there: removed

    def fails_after_a_checkpoint(n, argv, **kw):
        ckpt = run / "checkpoints" / "step-1"
        ckpt.mkdir(parents=True)
        (ckpt / "COMPLETE").write_text("")
        fails(n, argv)

    monkeypatch.setattr(launch_mod, "launch", fails_after_a_checkpoint)
    monkeypatch.setattr("tdm_r1.train.checkpoint.complete", lambda folder: Path(folder).is_dir())
    line = one_line_error(runner.invoke(app, args), "to resume")
    assert "Checkpoints are in" in line and run.is_dir()
