"""`tdmbench toy build`: the from-scratch rebuild path (AE -> teacher -> TDM student), at tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdm_r1.apps.toybuild import build as toy_build


def test_tiny_rebuild_runs_every_stage_resumably_and_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = toy_build.Recipe(
        ae_steps=3,
        ae_batch=4,
        ae_data=16,
        teacher_steps=3,
        teacher_batch=4,
        teacher_lr=1e-3,
        teacher_data=16,
        student_minutes=0.01,
    )
    monkeypatch.setitem(toy_build.RECIPES, "tiny", tiny)
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "build"
    first = toy_build.build(out, recipe="tiny", stages=("ae",))
    assert first["stages"]["ae"]["finished"] and (out / "vae" / "config.json").is_file()
    result = toy_build.build(out, recipe="tiny")  # ae is skipped (done), teacher and student run
    assert all(s["finished"] for s in result["stages"].values())
    assert (out / "toy-teacher" / "model_index.json").is_file()
    assert (out / "student" / "final" / "lora" / "adapter_model.safetensors").is_file()
    log = [json.loads(x) for x in (out / "build-log.jsonl").read_text().splitlines()]
    assert len(log) == 2
    dest = tmp_path / "weights"
    toy_build.install_weights(out, dest)
    assert (dest / "toy-teacher" / "transformer").is_dir() and (
        dest / "toy-4step" / "adapter_config.json"
    ).is_file()
