"""Multi-process runs start their processes from one source: the command's own parameters (eval)
or the run's resolved ``config.yaml`` (train, distill); nothing is copied option by option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.config import dump_yaml
from tdm_r1.testing.evalkit import Kit, kit_fixture  # noqa: F401 (fixture)
from tdm_r1.train.config import RECIPES_DIR, load_train_config

runner = CliRunner()
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[str]]]:
    """What ``launch`` would start (number of processes, child argv), instead of starting it."""
    calls: list[tuple[int, list[str]]] = []
    monkeypatch.setattr("tdm_r1.eval.launch.launch", lambda n, argv, **kw: calls.append((n, list(argv))))
    return calls


def test_eval_children_get_every_option_the_parent_was_given(
    kit: Kit, launched: list, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        "tdm_r1.eval.runner.evaluate", lambda model, benches, **kw: seen.append((model, benches, kw)) or []
    )
    opts = ["--model", "kit-r1", "-b", "kit-bright", "--benchmark", "kit-geneval", "--limit", "3"]
    opts += ["--batch-size", "5", "--device", "cpu", "--reward-option", "kit-geneval.threshold=0.4"]
    opts += [
        "--results-dir",
        str(tmp_path / "r"),
        "--plugin",
        "tdm_r1.testing.evalkit:register",
        "--no-progress",
    ]
    result = runner.invoke(app, ["-q", "eval", *opts, "--num-processes", "2"])
    assert result.exit_code == 0, result.output
    ((n, child),) = launched
    assert n == 2 and child[:2] == ["--quiet", "eval"] and "--num-processes" not in child
    eval_cmd = typer.main.get_command(app).commands["eval"]  # type: ignore[attr-defined]
    for param in eval_cmd.params:  # this test gives every option; the child must get each
        if param.name != "num_processes":
            assert any(opt in child for opt in [*param.opts, *param.secondary_opts]), param.name
    # a child (one process of the launch) calls the runner exactly as a one-process run does
    assert runner.invoke(app, ["eval", *opts]).exit_code == 0
    assert runner.invoke(app, child).exit_code == 0
    assert len(seen) == 2 and seen[0] == seen[1]
    assert seen[0][1] == ["kit-bright", "kit-geneval"] and seen[0][2]["reward_options"] == {
        "kit-geneval": {"threshold": 0.4}
    }


class _Recorder:
    """Stands for the trainer: records the config it is given."""

    configs: list[Any] = []

    def __init__(self, cfg: Any) -> None:
        self.configs.append(cfg)
        self.cfg = cfg

    def fit(self) -> Path:
        return self.cfg.run_dir()


def test_training_processes_read_the_runs_config_yaml_and_nothing_else(
    launched: list, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr("tdm_r1.train.trainer.Trainer", _Recorder)
    _Recorder.configs = []
    args = ["train", "--reward", "ocr", "--set", "method.beta_dpo=3", "--max-epochs", "2"]
    args += ["--name", "x", "--device", "cpu"]
    result = runner.invoke(app, ["-v", *args, "--num-processes", "2"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "runs" / "x" / "config.yaml"
    assert launched == [(2, ["--verbose", "train", "--config", str(path)])]
    assert runner.invoke(app, args).exit_code == 0  # one process
    assert runner.invoke(app, launched[0][1][1:]).exit_code == 0  # a child of the launch
    one, child = _Recorder.configs
    assert child == one  # the whole TrainConfig
    assert (one.name, one.rewards, one.method.beta_dpo, one.max_epochs) == ("x", {"ocr": 1.0}, 3.0, 2)
    assert one.data.toy_tasks == {"text": 1.0}  # the toy-ocr preset that --reward ocr picks

    # distill relaunches the same way (the config says: no reward)
    launched.clear()
    distill = ["distill", "--teacher", "toy-teacher", "--name", "d", "--num-processes", "2"]
    assert runner.invoke(app, distill).exit_code == 0
    assert launched == [(2, ["train", "--config", str(tmp_path / "runs" / "d" / "config.yaml")])]
    assert runner.invoke(app, launched[0][1]).exit_code == 0
    assert _Recorder.configs[-1].distill and _Recorder.configs[-1].model.steps == 4


def test_a_changed_config_is_refused_before_any_process_starts(
    launched: list, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    args = ["train", "--config", "toy-ocr", "--name", "x", "--num-processes", "2"]
    assert runner.invoke(app, args).exit_code == 0
    run = tmp_path / "runs" / "x"
    (run / "checkpoints" / "step-1").mkdir(parents=True)
    (run / "checkpoints" / "step-1" / "COMPLETE").write_text("")  # a finished checkpoint
    before = (run / "config.yaml").read_text()
    result = runner.invoke(app, [*args, "--set", "method.beta_dpo=4"])
    assert result.exit_code == 2 and "method.beta_dpo: 10.0 -> 4.0" in result.output
    assert len(launched) == 1 and (run / "config.yaml").read_text() == before
    # a safe change (a longer run) resumes: the new config is written and launched
    assert runner.invoke(app, [*args, "--max-epochs", "200"]).exit_code == 0
    assert len(launched) == 2 and load_train_config(run / "config.yaml").max_epochs == 200


@pytest.mark.parametrize("preset", sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
def test_a_written_config_yaml_gives_back_the_same_config(preset: str, tmp_path: Path) -> None:
    cfg = load_train_config(preset)
    dump_yaml(cfg, tmp_path / "config.yaml")
    assert load_train_config(tmp_path / "config.yaml") == cfg


@pytest.mark.slow
def test_a_two_process_cli_training_run(tiny_folder: Path, tmp_path: Path) -> None:
    """The real thing: `tdmbench train --num-processes 2` on the tiny pipeline (gloo, 2 CPU processes)."""
    from tdm_r1.models.preset import ModelPreset, save_preset_file

    model = save_preset_file(
        ModelPreset(
            name="tiny", family="sd3", hub_id=str(tiny_folder), steps=2, shift=1.0, height=32, width=32,
            kind="distilled", dtype="float32",
        ),
        tmp_path / "tiny.json",
    )  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(
        f"model: {{name: {model}, lora_rank: 4, lora_alpha: 4, offload_text_encoders: false}}\n"
        "rewards: {jpeg-compressibility: 1.0}\n"
        "data: {toy_tasks: {single_object: 1.0}}\n"
        "rollout: {prompts_per_epoch: 2, group_size: 4, batch_size: 8}\n"
        "method: {micro_batch: 4, num_train_timesteps: 1}\n"
        "optim: {grad_accum: 1}\n"
        "trackers: []\n"
    )
    env = dict(os.environ, TDMBENCH_RUNS=str(tmp_path / "runs"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "tdm_r1.cli", "-q", "train", "--config", str(tmp_path / "cfg.yaml")]
    cmd += ["--name", "two", "--max-epochs", "2", "--device", "cpu", "--num-processes", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "two"
    assert load_train_config(run / "config.yaml").max_epochs == 2
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and (run / "final" / "preset.json").is_file()
