from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.testing.signs import sign

runner = CliRunner()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    sign("HELLO").save(root / "hello.png")
    sign("HELO").save(root / "helo.png")
    Image.new("RGB", (128, 128), "white").save(root / "sub" / "blank.png")  # another size: its own batch
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    rows = [
        {"file": "hello.png", "prompt": 'a sign saying "HELLO"'},
        {"file": "helo.png", "prompt": 'a sign saying "HELLO"'},
        {"file": "sub/blank.png", "prompt": 'a sign saying "HELLO"'},
        {"file": "corrupt.png", "prompt": 'a sign saying "HELLO"'},
        {"file": "gone.png", "prompt": "no such file"},
    ]
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_score_ocr_with_a_corrupt_image(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "ocr.csv"
    args = [
        "score",
        str(folder),
        "--reward",
        "ocr",
        "--metadata",
        str(tmp_path / "meta.jsonl"),
        "--out",
        str(out),
    ]
    result = runner.invoke(app, [*args, "--reward-option", "ocr.workers=1", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "4 images" in result.output and "unreadable 1" in result.output
    df = pd.read_csv(out, keep_default_na=False, na_values=[""]).set_index("file")
    assert list(df.index) == ["corrupt.png", "hello.png", "helo.png", "sub/blank.png"]
    assert df.loc["hello.png", "score"] == 1.0
    assert df.loc["helo.png", "score"] == pytest.approx(0.8)
    assert df.loc["sub/blank.png", "score"] == 0.0
    assert pd.isna(df.loc["corrupt.png", "score"])
    assert "UnidentifiedImageError" in df.loc["corrupt.png", "error"]
    assert df.loc["corrupt.png", "nan_reason"] == "unreadable image"
    assert df.loc["helo.png", "recognized"] == "HELO"
    assert len(set(df["reward"])) == 1 and df["reward"].iloc[0].startswith("ocr@2-rapidocr-")  # + engine id
    assert {"exact_match", "substring_match", "edit_similarity", "target"} <= set(df.columns)


def test_weighted_sum_keeps_component_scores(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "sum.csv"
    result = runner.invoke(
        app,
        ["score", str(folder), "-r", "ocr=0.7", "-r", "jpeg-compressibility=0.3", "-m", str(tmp_path / "meta.jsonl"),
         "-o", str(out), "--reward-option", "ocr.workers=1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out).set_index("file")
    row = df.loc["helo.png"]
    assert row["ocr"] == pytest.approx(0.8)
    assert row["score"] == pytest.approx(0.7 * row["ocr"] + 0.3 * row["jpeg-compressibility"], abs=1e-6)
    assert row["ocr.recognized"] == "HELO" and row["jpeg-compressibility.jpeg_bytes"] > 0


def test_missing_metadata(folder: Path, tmp_path: Path) -> None:
    meta = tmp_path / "partial.jsonl"
    meta.write_text(json.dumps({"file": "hello.png", "prompt": '"HELLO"'}) + "\n")
    out = tmp_path / "m.csv"
    args = ["score", str(folder), "-r", "jpeg-compressibility", "-m", str(meta), "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "3 image(s) have no metadata row" in result.output and "sub/blank.png" in result.output
    result = runner.invoke(app, [*args, "--allow-missing-metadata"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out).set_index("file")
    assert pd.isna(df.loc["sub/blank.png", "prompt"]) and df.loc["sub/blank.png", "score"] < 0  # prompt ""


def test_bad_inputs_are_clean_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["score", str(tmp_path / "nope"), "-r", "ocr", "-o", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "bad.jsonl").write_text('{"file": "a.png"}\nnot json\n')
    result = runner.invoke(
        app, ["score", str(tmp_path / "imgs"), "-r", "ocr", "-m", str(tmp_path / "bad.jsonl"), "-o", "x.csv"]
    )
    assert result.exit_code == 2 and "bad.jsonl:2 is not valid JSON" in result.output


class CarDetector:
    """A stand-in GenEval backend: one red car in every image."""

    def __init__(self, **options: object) -> None:
        pass

    def __call__(self, images, metadata):  # noqa: ANN001, ANN204
        return [[{"class": "car", "box": [0, 0, 10, 10], "score": 0.95, "color": "red"}] for _ in metadata]


def test_score_geneval_prints_task_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    import sys
    import types

    from tdm_r1.rewards import geneval

    module = types.ModuleType("tdm_test_car_detector")
    module.CarDetector = CarDetector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tdm_test_car_detector", module)
    geneval.DETECTOR_BACKENDS.add_lazy("cars", "tdm_test_car_detector:CarDetector")
    request.addfinalizer(lambda: geneval.DETECTOR_BACKENDS.remove("cars"))
    root = tmp_path / "imgs"
    root.mkdir()
    metas = [
        {"file": "a.png", "prompt": "a photo of a red car", "tag": "colors",
         "include": [{"class": "car", "count": 1, "color": "red"}]},
        {"file": "b.png", "prompt": "a photo of a blue car", "tag": "colors",
         "include": [{"class": "car", "count": 1, "color": "blue"}]},
        {"file": "c.png", "prompt": "a photo of two cars", "tag": "counting",
         "include": [{"class": "car", "count": 2}], "exclude": [{"class": "car", "count": 3}]},
    ]  # fmt: skip
    for m in metas:
        Image.new("RGB", (16, 16)).save(root / m["file"])
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(m) for m in metas))
    out = tmp_path / "g.csv"
    result = runner.invoke(
        app, ["score", str(root), "-r", "geneval", "-m", str(tmp_path / "m.jsonl"), "-o", str(out),
              "--reward-option", "geneval.backend=cars"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "GenEval counting 0.000, colors 0.500, overall 0.250" in result.output
    df = pd.read_csv(out).set_index("file")
    assert df.loc["b.png", "reason"] == "expected blue car>=1, found 0 blue; and 1 red"
    assert df.loc["c.png", "partial"] == 0.5
