"""docs/extending.md's walk-throughs, run as written: a reward and a model from plug-in files
(examples/plugins/; the RL method's walk-through is tests/train/test_method_plugin.py)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "examples" / "plugins"
SAMPLES = REPO / "examples" / "sample_images"


@pytest.fixture
def plugin():
    """Load a plug-in file inside the test only."""
    from tdm_r1.plugins import load_plugins
    from tdm_r1.testing.plugins import isolated_plugins

    with isolated_plugins():
        yield lambda name: (load_plugins([str(PLUGINS / name)]), sys.modules[Path(name).stem])[1]


def test_colorfulness_has_the_hand_computed_values(plugin) -> None:
    mod = plugin("colorfulness_reward.py")
    grey = torch.full((1, 3, 4, 4), 0.5)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    half = red.clone()
    half[:, :, :, 2:] = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)  # right half pure green
    got = mod.colorfulness(torch.cat([grey, red, half]))
    # red: rg = 1, yb = 0.5 everywhere: M = 0.3 sqrt(1.25); red|green: std(rg) = 1, mean(yb) = 0.5
    want = [0.0, 0.3 * math.sqrt(1.25), 1.0 + 0.3 * 0.5]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert float(mod.colorfulness(red.flip(1))[0]) != float(got[1])  # blue is not red: B enters yb


def test_the_reward_walk_through_scores_the_sample_images_as_in_process(plugin, tmp_path: Path) -> None:
    out = tmp_path / "colorfulness.csv"
    cmd = [sys.executable, "-m", "tdm_r1.cli", "--plugin", str(PLUGINS / "colorfulness_reward.py"), "score"]
    cmd += [str(SAMPLES), "--metadata", str(SAMPLES / "metadata.jsonl"), "--reward", "colorfulness"]
    env = {k: v for k, v in os.environ.items() if k != "TDMBENCH_PLUGINS"}
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r["file"]: r for r in csv.DictReader(out.open())}
    assert {r["reward"] for r in rows.values()} == {"colorfulness@1"}
    mod = plugin("colorfulness_reward.py")
    from tdm_r1.images import load_image

    for name, row in rows.items():
        image = load_image(SAMPLES / name)
        assert float(row["score"]) == pytest.approx(float(mod.colorfulness(image)[0]), abs=1e-6), name


def test_the_model_walk_through_registers_a_short_schedule_of_the_teacher(plugin) -> None:
    from tdm_r1.models.preset import resolve_model
    from tdm_r1.registry import MODELS

    plugin("toy_teacher_8step.py")
    preset, teacher = resolve_model("toy-teacher-8step"), resolve_model("toy-teacher")
    assert preset.sampling.steps == 8 and preset.hub_id == teacher.hub_id
    assert preset.sampling.guidance == teacher.sampling.guidance and preset.lora is None
    assert "toy-teacher-8step" in MODELS


def test_plugins_do_not_leak_out_of_the_test() -> None:
    from tdm_r1.registry import METHODS, MODELS, REWARDS

    assert "colorfulness" not in REWARDS and "toy-teacher-8step" not in MODELS and "rwr" not in METHODS
