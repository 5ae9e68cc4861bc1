from __future__ import annotations

import time
from pathlib import Path

import pytest

from tdm_r1 import data
from tdm_r1.errors import MissingDataError, MissingWeightsError
from tdm_r1.weights import WeightFile, resolve


def test_shared_copies_match_the_pinned_sha256(shared_data: Path) -> None:
    for name in data.DATA_FILES:
        path = data.data_path(name)
        assert path.is_file()
    assert len(data.read_lines(data.data_path("ocr"))) == 1018
    assert len(data.read_lines(data.data_path("geneval"))) == 553
    assert len(data.read_lines(data.data_path("pickscore"))) == 2048


def test_missing_data_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDMBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(MissingDataError, match="tdmbench data fetch ocr"):
        data.data_path("ocr")


def test_corrupt_data_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDMBENCH_DATA_DIR", str(tmp_path))
    (tmp_path / "ocr").mkdir()
    (tmp_path / "ocr" / "test.txt").write_text("not the file\n")
    with pytest.raises(MissingDataError, match="sha256"):
        data.data_path("ocr")


def test_offline_missing_weights_fail_fast_with_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wf = WeightFile(
        key="demo.model",
        hub_id="tdmbench-test/definitely-not-cached",
        filename="model.safetensors",
        size="1 MB",
        env="TDMBENCH_DEMO_MODEL",
        option="--reward-option demo.model_path",
        description="Demo model",
    )
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        resolve(wf)
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    assert "tdmbench-test/definitely-not-cached/model.safetensors" in msg
    assert "TDMBENCH_DEMO_MODEL" in msg and "demo.model_path" in msg


def test_local_path_and_env_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wf = WeightFile("d.m", "x/y", "w.bin", "1 MB", "TDMBENCH_D_M", "--opt", "D")
    (tmp_path / "w.bin").write_bytes(b"0")
    assert resolve(wf, tmp_path) == tmp_path / "w.bin"
    monkeypatch.setenv("TDMBENCH_D_M", str(tmp_path / "w.bin"))
    assert resolve(wf) == tmp_path / "w.bin"
    with pytest.raises(MissingWeightsError, match="does not exist"):
        resolve(wf, tmp_path / "nope")
