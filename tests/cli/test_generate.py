"""`tdmbench generate` end to end on a tiny SD3 pipeline folder (``--model PATH``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tdm_r1.apps.generation import plan_jobs
from tdm_r1.cli import app
from tdm_r1.errors import ConfigError
from tdm_r1.prompt_files import read_prompts
from tdm_r1.seeds import derive_seed
from tdm_r1.testing.tiny import tiny_sd3_pipeline

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-sd3-cli")
    tiny_sd3_pipeline(seed=2).save_pretrained(folder)
    return folder


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _run(model_dir: Path, prompts: Path, out: Path, *extra: str):
    args = ["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out)]
    args += [
        "--height",
        "32",
        "--width",
        "32",
        "--steps",
        "2",
        "--guidance",
        "2.0",
        "--device",
        "cpu",
        *extra,
    ]
    return runner.invoke(app, args)


def test_generate_writes_pngs_and_metadata_and_resumes(model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": p, "tag": t}
        for p, t in [("a red cube", "color"), ("two cats", "counting"), ("a sign", "ocr")]
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = _run(model_dir, prompts, out, "--seed", "5", "-n", "2", "-b", "4")
    assert result.exit_code == 0, result.output
    meta = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [m["file"] for m in meta] == [f"{i:05d}_{j:02d}.png" for i in range(3) for j in range(2)]
    first = meta[2]
    assert first["prompt"] == "two cats" and first["tag"] == "counting" and first["image_index"] == 0
    assert first["seed"] == derive_seed(5, 1, 0) and first["base_seed"] == 5
    assert (first["steps"], first["guidance"], first["nfe"], first["height"]) == (2, 2.0, 4, 32)
    assert first["model"] == model_dir.name.lower()
    assert all(Image.open(out / m["file"]).size == (32, 32) for m in meta)

    # a deleted image is regenerated identically (in another batch composition), nothing else is redone
    target = out / "00002_01.png"
    before = _pixels(target)
    mtime = (out / "00000_00.png").stat().st_mtime_ns
    target.unlink()
    result = _run(model_dir, prompts, out, "--seed", "5", "-n", "2", "-b", "1")
    assert result.exit_code == 0, result.output
    assert np.abs(_pixels(target) - before).max() <= 1
    assert (out / "00000_00.png").stat().st_mtime_ns == mtime
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 6

    # a different seed changes the images
    other = tmp_path / "other"
    assert _run(model_dir, prompts, other, "--seed", "6", "-n", "1").exit_code == 0
    assert np.abs(_pixels(other / "00000_00.png") - _pixels(out / "00000_00.png")).max() > 5


def test_prompt_files(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\n  second  \n")
    assert [(r.index, r.prompt) for r in read_prompts(txt)] == [(0, "first"), (1, "second")]
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError, match="'prompt'"):
        read_prompts(bad)
    (tmp_path / "p.csv").write_text("x")
    with pytest.raises(ConfigError, match=r"\.txt .* or \.jsonl"):
        read_prompts(tmp_path / "p.csv")
    jobs = plan_jobs(read_prompts(txt), seed=3, images_per_prompt=2)
    assert [j.seed for j in jobs] == [derive_seed(3, i, j) for i in range(2) for j in range(2)]
