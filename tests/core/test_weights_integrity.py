"""Weight integrity: files with a published sha256 are checked on load and by `weights verify`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tdm_r1 import weights
from tdm_r1.cli import app
from tdm_r1.errors import WeightHashError
from tdm_r1.registry import REWARDS
from tdm_r1.testing import random_weights as rw

AESTHETIC_SHA256 = "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"


def pinned(tmp_path: Path, content: bytes, **kw: str) -> weights.WeightFile:
    return weights.WeightFile(
        key="test.file", hub_id="owner/repo", filename="w.bin", size="1 KB", env="TDMBENCH_TEST_W",
        option="--reward-option test.path", description="a test weight file",
        sha256=kw.get("sha256", hashlib.sha256(content).hexdigest()), sha256_source="the test",
    )  # fmt: skip


def test_the_aesthetic_mlp_is_pinned_to_its_published_sha256() -> None:
    from tdm_r1.rewards.aesthetic import MLP

    assert MLP.sha256 == AESTHETIC_SHA256 and MLP.sha256.startswith("21dd590f")
    assert "improved-aesthetic-predictor" in MLP.sha256_source


def test_a_matching_file_resolves_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(b"published weights")
    wf = pinned(tmp_path, b"published weights")
    assert weights.resolve(wf, good) == good
    prefix = pinned(tmp_path, b"", sha256=wf.sha256[:8])  # a published prefix (OpenMMLab style)
    assert weights.resolve(prefix, good) == good

    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"other weights")
    found = hashlib.sha256(b"other weights").hexdigest()
    with pytest.raises(WeightHashError) as info:
        weights.resolve(wf, bad)
    msg = str(info.value)
    assert str(bad) in msg and f"has sha256 {found}" in msg and f"has sha256 {wf.sha256};" in msg
    assert "tdmbench weights download test.file" in msg and "nothing is scored" in msg
    with pytest.raises(WeightHashError, match=r"published prefix"):
        weights.resolve(prefix, bad)


def test_aesthetic_refuses_a_wrong_mlp_before_scoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(weights.ALLOW_UNPINNED_ENV, raising=False)
    mlp = rw.write_aesthetic_mlp(tmp_path / "sac+logos+ava1-l14-linearMSE.pth", 16, seed=2)
    found = hashlib.sha256(mlp.read_bytes()).hexdigest()
    clip = tmp_path / "clip"  # never read: the MLP check comes first and fails
    clip.mkdir()
    with pytest.raises(WeightHashError) as info:
        REWARDS.get("aesthetic")(clip_path=clip, mlp_path=mlp)
    msg = str(info.value)
    assert str(mlp) in msg and found in msg and AESTHETIC_SHA256 in msg
    assert "tdmbench weights download aesthetic.mlp" in msg
    # CLI users get the one-line error, no traceback
    monkeypatch.setenv("TDMBENCH_AESTHETIC_MLP", str(mlp))
    monkeypatch.setenv("TDMBENCH_AESTHETIC_CLIP", str(clip))
    (tmp_path / "img").mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "img" / "a.png")
    result = CliRunner().invoke(
        app,
        ["score", str(tmp_path / "img"), "--reward", "aesthetic", "--out", str(tmp_path / "o.csv"),
         "--allow-missing-metadata"],
    )  # fmt: skip
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert found in result.output and not (tmp_path / "o.csv").exists()


def test_weights_verify_names_mismatches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(b"published weights")
    wf = pinned(tmp_path, b"published weights")
    weights.declare(wf)
    request.addfinalizer(lambda: weights.MANIFEST.remove(wf.key))
    monkeypatch.setenv(wf.env, str(good))
    wrong = rw.write_aesthetic_mlp(tmp_path / "mlp.pth", 16, seed=3)
    monkeypatch.setenv("TDMBENCH_AESTHETIC_MLP", str(wrong))
    runner = CliRunner()
    ok = runner.invoke(app, ["weights", "verify", "test.file"])
    assert ok.exit_code == 0, ok.output
    assert f"test.file: ok: {good}: sha256 {wf.sha256} matches" in ok.output
    res = runner.invoke(app, ["weights", "verify", "test.file", "aesthetic.mlp"])
    assert res.exit_code == 1
    assert "aesthetic.mlp: MISMATCH:" in res.output and str(wrong) in res.output
    assert AESTHETIC_SHA256 in res.output and hashlib.sha256(wrong.read_bytes()).hexdigest() in res.output
    monkeypatch.delenv(wf.env)
    missing = runner.invoke(app, ["weights", "verify", "test.file"])
    assert missing.exit_code == 0 and "test.file: missing" in missing.output
    assert runner.invoke(app, ["weights", "verify", "nope.key"]).exit_code != 0
