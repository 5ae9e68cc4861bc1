"""The bundled sample images: reproducible from examples/make_samples.py and scored as documented."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tdm_r1.images import from_pil
from tdm_r1.rewards.ocr import OcrReward

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SAMPLES = EXAMPLES / "sample_images"


def test_samples_are_small_and_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted(SAMPLES.iterdir())
    assert sum(f.stat().st_size for f in files) < 200_000
    spec = importlib.util.spec_from_file_location("make_samples", EXAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path)
    module.render()
    assert (tmp_path / "metadata.jsonl").read_text() == (SAMPLES / "metadata.jsonl").read_text()
    for png in SAMPLES.glob("*.png"):
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(tmp_path / png.name))), (
            png.name
        )


def test_samples_score_as_documented() -> None:
    rows = [json.loads(line) for line in (SAMPLES / "metadata.jsonl").read_text().splitlines()]
    images = from_pil([Image.open(SAMPLES / r["file"]) for r in rows])
    out = OcrReward(workers=1)(images=images, prompts=[r["prompt"] for r in rows], metadata=rows)
    for row, score in zip(rows, out.scores.tolist(), strict=True):
        if row["expected_ocr"] is None:
            assert math.isnan(score), row
        else:
            assert score == pytest.approx(row["expected_ocr"]), row
