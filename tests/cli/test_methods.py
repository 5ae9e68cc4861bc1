"""``tdmbench train --method`` and ``tdmbench ls methods`` (issue 14): which preset a method starts
from, unknown names, and incompatibilities that fail before any compute."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.cli.training import _default_train_config
from tdm_r1.config import to_dict
from tdm_r1.testing.clikit import one_line_error
from tdm_r1.train.config import load_train_config

runner = CliRunner()
METHODS = ("tdm-r1", "distill", "flow-grpo", "diffusionnft", "dgpo")


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sd35_train_prompts: Path) -> Path:
    """Runs under tmp_path, the working folder, which has the SD3.5 recipes' prompts stand-ins."""
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _resolved(monkeypatch: pytest.MonkeyPatch, args: list[str]):
    """(CLI output, the TrainConfig the dry run checked)."""
    import tdm_r1.train.preflight as config

    seen = []
    real = config.dry_run
    monkeypatch.setattr(config, "dry_run", lambda cfg, world: seen.append(cfg) or real(cfg, world))
    result = runner.invoke(app, ["train", *args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return result.output, seen[0]


def test_a_method_on_a_toy_model_starts_from_its_arena_preset(monkeypatch: pytest.MonkeyPatch, runs) -> None:
    args = ["--method", "flow-grpo", "--reward", "geneval", "--model", "toy-teacher"]
    out, cfg = _resolved(monkeypatch, args)
    assert "config: recipes/toy-flow-grpo-teacher-geneval.yaml" in out
    assert "config OK (toy-teacher-flow-grpo-geneval, method flow-grpo)" in out
    assert to_dict(cfg) == to_dict(load_train_config("toy-flow-grpo-teacher-geneval"))
    assert cfg.method.flow_grpo.rollout_steps == 10 and cfg.model.name == "toy-teacher"


def test_default_configs_per_model_method_and_reward() -> None:
    assert _default_train_config(None, ["ocr"]) == "toy-ocr"  # TDM-R1 keeps its own toy presets
    assert _default_train_config("toy-4step", ["geneval"], "tdm-r1") == "toy-geneval"
    assert _default_train_config(None, ["ocr"], "dgpo") == "toy-dgpo-4step-ocr"
    assert _default_train_config("toy-teacher", ["ocr=1"], "diffusionnft") == "toy-diffusionnft-teacher-ocr"
    assert _default_train_config(None, ["ocr"], "diffusionnft") == "toy-diffusionnft-4step-ocr"
    # no arena preset: nothing on the teacher for TDM-R1 (as before)
    assert _default_train_config("toy-teacher", ["ocr"], "tdm-r1") is None
    assert (
        _default_train_config(None, ["ocr", "geneval"], "dgpo") == "toy-r1"
    )  # two rewards: no per-reward preset
    assert _default_train_config("sd3.5-medium", ["ocr"], "flow-grpo") is None


def test_method_flag_overrides_a_config_and_is_optional(monkeypatch: pytest.MonkeyPatch, runs) -> None:
    _, cfg = _resolved(monkeypatch, ["--config", "toy-flow-grpo-4step-ocr"])
    assert cfg.method_name == "flow-grpo"  # no --method: the config's method, not tdm-r1
    _, cfg = _resolved(monkeypatch, ["--config", "sd3.5m-ocr", "--method", "dgpo"])
    # another method's config: a run folder of its own, and no registered name the preset did not have
    assert (cfg.method_name, cfg.name, cfg.register_as) == ("dgpo", "sd3.5m-ocr-dgpo", None)
    _, cfg = _resolved(monkeypatch, ["--config", "toy-dgpo-4step-ocr", "--method", "dgpo"])
    assert cfg.name == "toy-4step-dgpo-ocr"  # the config's own method: its name is kept
    _, cfg = _resolved(monkeypatch, ["--reward", "ocr"])
    assert cfg.method_name == "tdm-r1" and cfg.name == "toy-4step-r1-ocr"


def test_another_method_on_tdm_r1s_toy_preset_gets_its_own_run_name(
    monkeypatch: pytest.MonkeyPatch, runs
) -> None:
    out, cfg = _resolved(monkeypatch, ["--config", "toy-ocr", "--method", "diffusionnft", "--reward", "ocr"])
    assert "toy-ocr" in out
    assert (cfg.method_name, cfg.name, cfg.register_as) == (
        "diffusionnft",
        "toy-ocr-diffusionnft",
        "toy-ocr-diffusionnft",
    )
    _, cfg = _resolved(
        monkeypatch, ["--config", "toy-ocr", "--method", "diffusionnft", "--reward", "ocr", "--name", "mine"]
    )
    assert (cfg.name, cfg.register_as) == ("mine", "mine")


def test_an_unknown_method_is_one_line_naming_the_registered_ones(runs) -> None:
    result = runner.invoke(app, ["train", "--method", "nope", "--reward", "ocr", "--dry-run"])
    line = one_line_error(result, "Unknown method 'nope'", "tdmbench ls methods")
    assert all(m in line for m in METHODS)
    line = one_line_error(runner.invoke(app, ["train", "--method", "flow-gpro", "--reward", "ocr"]))
    assert "Did you mean 'flow-grpo'" in line


def test_ls_methods_lists_every_method_with_its_rollout_and_toy_presets() -> None:
    result = runner.invoke(app, ["ls", "methods"])
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells
        for line in result.output.splitlines()[2:]
        if (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    assert set(rows) == set(METHODS)
    assert rows["flow-grpo"][1:3] == ["yes", "sde"] and rows["dgpo"][1:3] == ["yes", "ode"]
    assert rows["distill"][1] == "no"
    assert rows["flow-grpo"][3] == "method.flow_grpo" and rows["tdm-r1"][3] == "-"
    assert rows["flow-grpo"][4].startswith("Flow-GRPO")
    assert "toy-flow-grpo-teacher-geneval" in rows["flow-grpo"][5]
    assert "toy-flow-grpo" not in rows["dgpo"][5]
    assert rows["distill"][5] == "toy-distill"
    assert {"toy-ocr", "toy-geneval", "toy-r1"} <= set(rows["tdm-r1"][5].split(", "))
    assert [r[6] for r in rows.values()] == ["built-in"] * len(rows)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        # an SDE method on a model without an Euler flow schedule (the 4-step DPM-Solver++ student)
        (
            ["--method", "flow-grpo", "--reward", "ocr", "--model", "tdm-sd3.5-medium-4step"],
            ("flow-grpo", "tdm-sd3.5-medium-4step", "dpmsolver++", "Euler"),
        ),
        # a method that needs CFG on a model without an unconditional branch (the CFG-distilled toy student)
        (
            ["--method", "dgpo", "--reward", "ocr", "--set", "method.dgpo.guidance=4.5"],
            ("dgpo", "toy-4step", "no trained unconditional branch"),
        ),
        (
            ["--method", "flow-grpo", "--reward", "ocr", "--set", "method.flow_grpo.guidance=3"],
            ("flow-grpo", "toy-4step", "no trained unconditional branch"),
        ),
    ],
    ids=["sde-without-flow-schedule", "dgpo-cfg-without-uncond", "flow-grpo-cfg-without-uncond"],
)
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_an_incompatible_model_fails_before_any_compute(
    args: list[str], needles, dry: bool, runs: Path
) -> None:
    result = runner.invoke(app, ["train", *args, "--device", "cpu", *(["--dry-run"] if dry else [])])
    one_line_error(result, *needles)
    assert not runs.exists()  # nothing was written, so nothing was loaded or run
