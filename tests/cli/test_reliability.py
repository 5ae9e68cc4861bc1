"""Issue 12: bad input and faults. Each test reproduces a case of the issue that failed before.

Every user-caused error must end in one line (``error: ...``, exit code 2) without a traceback,
and keep its traceback only with ``--debug``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.errors import ConfigError, MissingWeightsError
from tdm_r1.rewards.base import NAN_REASON, Reward, RewardOutput, WeightedSum, parse_reward_specs
from tdm_r1.testing.clikit import one_line_error
from tdm_r1.testing.evalkit import CALLS, Kit, KitBrightness, kit_fixture  # noqa: F401 (fixture)
from tdm_r1.weights import WeightFile

runner = CliRunner()
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _bad_parameter(result, *needles: str) -> None:
    """typer's own usage error (exit code 2, no traceback) naming the option."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, result.output


def _toy_run(runs: Path, name: str = "my-run") -> Path:
    """A finished run folder as training leaves it: runs/<name>/final/preset.json (toy-4step)."""
    from tdm_r1.models.preset import save_preset_file
    from tdm_r1.registry import MODELS

    preset = dataclasses.replace(MODELS.get("toy-4step"), name=name)
    return save_preset_file(preset, runs / name / "final" / "preset.json").parent


# ----------------------------------------------------------------------------- 1: model resolution
@pytest.mark.slow
def test_eval_takes_the_models_generate_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    final = _toy_run(runs)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TDMBENCH_RUNS", str(runs))
    base = ["eval", "--benchmark", "toy-geneval", "--limit", "1", "--device", "cpu", "--no-progress"]
    base += ["--results-dir", str(tmp_path / "results")]
    # the README's form, an absolute path, the preset file, and the run's name in a new process
    for spec in ("runs/my-run/final", str(final), str(final / "preset.json"), "my-run"):
        result = runner.invoke(app, [*base, "--model", spec])
        assert result.exit_code == 0, (spec, result.output)
        assert "my-run on toy-geneval" in result.output
    result = runner.invoke(app, [*base, "--model", "runs/nope/final"])
    one_line_error(result, "runs/nope/final", "does not exist")


def test_resolve_model_finds_runs_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tdm_r1.errors import UnknownNameError
    from tdm_r1.models.preset import resolve_model

    runs = tmp_path / "runs"
    final = _toy_run(runs, "other-folder")
    # a run whose registered name differs from its folder (register_as)
    data = json.loads((final / "preset.json").read_text())
    data["name"] = "registered-as"
    (final / "preset.json").write_text(json.dumps(data))
    monkeypatch.setenv("TDMBENCH_RUNS", str(runs))
    assert resolve_model("other-folder").name == "registered-as"
    assert resolve_model("registered-as").name == "registered-as"
    assert resolve_model(runs / "other-folder").name == "registered-as"  # the run folder itself
    with pytest.raises(UnknownNameError, match="Unknown model 'nothing-like-it'"):
        resolve_model("nothing-like-it")


# ------------------------------------------------------------------------------ 7, 8: score
def _bomb_png(path: Path, side: int = 40000) -> None:
    """A PNG whose header claims side x side pixels (a few hundred bytes on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _images(folder: Path, n: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (40 * i, 40 * i, 40 * i)).save(folder / f"{i}.png")
    return folder


def test_an_oversized_image_gets_an_error_row(tmp_path: Path) -> None:
    folder = _images(tmp_path / "imgs", 2)
    _bomb_png(folder / "bomb.png")
    out = tmp_path / "s.csv"
    args = ["score", str(folder), "-r", "jpeg-compressibility", "-o", str(out), "--allow-missing-metadata"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out, keep_default_na=False, na_values=[""]).set_index("file")
    assert "decompression bomb" in df.loc["bomb.png", "error"] and math.isnan(df.loc["bomb.png", "score"])
    assert df.loc[["0.png", "1.png"], "score"].notna().all()


def test_score_checks_out_first_and_writes_rows_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdm_r1.rewards.jpeg import JpegCompressibility

    folder = _images(tmp_path / "imgs", 5)
    base = [
        "score",
        str(folder),
        "-r",
        "jpeg-compressibility",
        "--allow-missing-metadata",
        "--batch-size",
        "2",
    ]
    # --out is a folder: refused before any scoring (today: IsADirectoryError after scoring)
    calls: list[int] = []
    original = JpegCompressibility.score

    def counting(self, images, prompts, metadata):
        calls.append(len(prompts))
        if sum(calls) > 2 and os.environ.get("CRASH"):
            raise RuntimeError("killed midway")
        return original(self, images, prompts, metadata)

    monkeypatch.setattr(JpegCompressibility, "score", counting)
    one_line_error(runner.invoke(app, [*base, "-o", str(tmp_path)]), "is a folder")
    assert calls == []
    if not IS_ROOT:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        one_line_error(runner.invoke(app, [*base, "-o", str(locked / "s.csv")]), "permission denied")
        assert calls == []
    # a crash after the first batch keeps that batch; the rerun scores only the rest
    out = tmp_path / "s.csv"
    monkeypatch.setenv("CRASH", "1")
    result = runner.invoke(app, [*base, "-o", str(out)])
    assert result.exit_code != 0 and not out.exists()
    partial = out.with_name("s.csv.partial.jsonl")
    assert len(partial.read_text().splitlines()) == 2
    monkeypatch.delenv("CRASH")
    calls.clear()
    result = runner.invoke(app, [*base, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sum(calls) == 3 and not partial.exists()
    df = pd.read_csv(out)
    assert list(df["file"]) == [f"{i}.png" for i in range(5)] and df["score"].notna().all()


# ------------------------------------------------------------------------------ 9: generate resume
class _FakeAdapter:
    """A generator whose image is a flat colour from (prompt, seed): enough for the bookkeeping."""

    def __init__(self, tag: str = "a") -> None:
        from tdm_r1.models.spec import SamplingSpec

        self.tag = tag
        self.sampling = SamplingSpec(steps=2, guidance=1.0, shift=1.0, height=8, width=8)
        self.calls = 0

    def config_dict(self) -> dict:
        return {"fake": self.tag}

    def schedule(self, steps, height=None, width=None):
        return type("S", (), {"passes": steps})()

    def generate(self, prompts, seeds, **kw):
        self.calls += len(prompts)
        return torch.stack([torch.full((3, 8, 8), (s % 200) / 255) for s in seeds])


def test_generate_resumes_only_its_own_run_and_redoes_cut_files(tmp_path: Path) -> None:
    from tdm_r1.apps.generation import generate_to_dir

    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\nthree\n")
    out = tmp_path / "out"
    first = _FakeAdapter()
    generate_to_dir(first, prompts, out, model_name="m", progress=False)
    assert first.calls == 3
    # a truncated PNG is not "done"
    png = out / "00001_00.png"
    png.write_bytes(png.read_bytes()[:30])
    again = _FakeAdapter()
    generate_to_dir(again, prompts, out, model_name="m", progress=False)
    assert again.calls == 1
    with Image.open(png) as im:
        im.load()
    # another seed, another model, other prompts: refused, nothing mixed in
    for kwargs, adapter, text in (
        ({"seed": 7}, _FakeAdapter(), "seed="),
        ({}, _FakeAdapter("b"), "model_identity="),
        ({}, _FakeAdapter(), "prompt="),
    ):
        if text == "prompt=":
            prompts.write_text("uno\ntwo\nthree\n")
        with pytest.raises(ConfigError, match=f"another run: .*{text}"):
            generate_to_dir(adapter, prompts, out, model_name="m", progress=False, **kwargs)
        assert adapter.calls == 0
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 3


def test_generate_checks_inputs_before_loading_and_keeps_out_uncreated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdm_r1.models.preset import ModelPreset

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(ModelPreset, "load", no_load)
    out = tmp_path / "out"
    base = ["generate", "--model", "toy-4step", "--out", str(out)]
    folder = tmp_path / "prompts"
    folder.mkdir()
    one_line_error(runner.invoke(app, [*base, "--prompts", str(folder)]), "is a folder, not a file")
    one_line_error(runner.invoke(app, [*base, "--prompts", str(tmp_path / "none.txt")]), "does not exist")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("a caf\xe9 sign\n".encode("latin-1"))
    one_line_error(runner.invoke(app, [*base, "--prompts", str(bad)]), "latin1.txt:1", "UTF-8")
    nulls = tmp_path / "null.jsonl"
    nulls.write_text('{"prompt": null}\n')
    one_line_error(runner.invoke(app, [*base, "--prompts", str(nulls)]), "null.jsonl:1", "'prompt'")
    assert not out.exists()
    _bad_parameter(runner.invoke(app, [*base, "--prompts", str(bad), "--batch-size", "0"]), "--batch-size")
    afile = tmp_path / "afile"
    afile.write_text("x")
    good = tmp_path / "good.txt"
    good.write_text("a\n")
    result = runner.invoke(app, ["generate", "--model", "toy-4step", "-p", str(good), "-o", str(afile)])
    one_line_error(result, "is a file")


# ------------------------------------------------------------------------- 10, 11, 12: eval runner
def test_eval_finds_missing_reward_weights_before_generating(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdm_r1.eval.runner import evaluate

    missing = WeightFile(
        "kit.weights",
        "kit/none",
        "w.bin",
        "1 KB",
        "KIT_W",
        "--reward-option kit-brightness.path",
        "kit weights",
    )
    monkeypatch.setattr(KitBrightness, "weight_files", (missing,), raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="kit-brightness.path=PATH"):
        evaluate("kit-4step", ["kit-bright"], progress=False)
    assert CALLS.images == 0  # not a single image generated before the failure


def test_a_limit_run_never_replaces_a_full_result(kit: Kit) -> None:
    from tdm_r1.eval.results import read_summaries, run_files
    from tdm_r1.eval.runner import evaluate

    evaluate("kit-4step", ["kit-bright"], progress=False)
    full = run_files("kit-bright", "kit-4step", kit.results)
    before = (full.csv.read_bytes(), full.samples.read_bytes())
    (res,) = evaluate("kit-4step", ["kit-bright"], limit=3, progress=False)
    assert (full.csv.read_bytes(), full.samples.read_bytes()) == before
    assert res.files.csv == kit.results / "kit-bright" / "partial" / "kit-4step.limit3.csv"
    # the leaderboard still reads the full run only
    pd.testing.assert_frame_equal(
        read_summaries(kit.results),
        pd.read_csv(full.csv, dtype={"reward_version": str, "benchmark_version": str}),
    )
    (res,) = evaluate("kit-4step", ["kit-bright"], limit=10, progress=False)  # all 10 prompts: full
    assert res.files.csv == full.csv


def test_cached_scores_outside_the_reward_range_are_recomputed(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdm_r1.eval.cache import ScoreCache
    from tdm_r1.eval.runner import evaluate

    monkeypatch.setattr(KitBrightness, "score_range", (0.0, 1.0), raising=False)
    (first,) = evaluate("kit-4step", ["kit-bright"], progress=False)
    files = sorted((kit.cache / "eval").rglob("*.json"))
    edited = 0
    for path in files:
        try:
            entry = json.loads(path.read_text())
        except ValueError:
            continue
        if str(entry.get("reward_id", "")).startswith("kit-brightness") and entry.get("score") is not None:
            entry["score"] = 57.0
            path.write_text(json.dumps(entry))
            edited, edited_path = edited + 1, path
            break
    assert edited == 1 and ScoreCache  # one hand-edited score
    CALLS.reset()
    (second,) = evaluate("kit-4step", ["kit-bright"], progress=False)
    assert CALLS.scored == 1, edited_path
    pd.testing.assert_frame_equal(first.summary, second.summary)


# ------------------------------------------------------------------ 13: one line for user errors
def test_bad_files_and_devices_are_one_line_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("rollout:\n  group_size: [16\n")
    line = one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]), "bad.yaml:", "invalid YAML")
    assert "bad.yaml:2" in line or "bad.yaml:3" in line
    cfg.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]), "bad.yaml:1", "!!python")
    cfg.write_bytes("name: caf\xe9\n".encode("latin-1"))
    one_line_error(runner.invoke(app, ["train", "--config", str(cfg)]), "bad.yaml:1", "UTF-8")
    folder = _images(tmp_path / "imgs", 1)
    meta = tmp_path / "m.jsonl"
    meta.write_bytes('{"file": "0.png", "prompt": "caf\xe9"}\n'.encode("latin-1"))
    score = ["score", str(folder), "-r", "jpeg-compressibility", "-o", str(tmp_path / "o.csv")]
    one_line_error(runner.invoke(app, [*score, "-m", str(meta)]), "m.jsonl:1", "UTF-8")
    meta.write_text('{"file": "0.png", "prompt": null}\n')
    one_line_error(runner.invoke(app, [*score, "-m", str(meta)]), "m.jsonl:1", '"prompt" must be a string')
    _bad_parameter(runner.invoke(app, [*score, "--device", "gpu0"]), "gpu0", "not a torch device")
    if not torch.cuda.is_available():
        _bad_parameter(runner.invoke(app, [*score, "--device", "cuda"]), "no CUDA GPU")
    # --debug keeps the traceback of the same error
    result = runner.invoke(app, ["--debug", "train", "--config", str(cfg)])
    assert (
        result.exit_code != 0
        and result.exception is not None
        and not isinstance(result.exception, SystemExit)
    )


def test_malformed_or_unknown_geneval_clauses_are_named(tmp_path: Path) -> None:
    folder = _images(tmp_path / "imgs", 1)
    meta = tmp_path / "g.jsonl"
    base = ["score", str(folder), "-r", "geneval", "--reward-option", "geneval.backend=shapes"]
    base += ["-m", str(meta), "-o", str(tmp_path / "g.csv"), "--device", "cpu"]
    cases = [
        ({"class": "circle", "count": "two"}, "count must be an integer"),
        (5, "must be an object with 'class' and 'count'"),
        (
            {"class": "hexagon", "count": 1},
            "unknown class 'hexagon'. Valid classes: circle, square, triangle",
        ),
        ({"class": "circle", "count": 1, "color": "teal"}, "unknown colour 'teal'. Valid colours: red"),
    ]
    for clause, text in cases:
        row = {"file": "0.png", "prompt": "p", "tag": "single_object", "include": [clause]}
        meta.write_text(json.dumps(row) + "\n")
        one_line_error(runner.invoke(app, base), "g.jsonl", text)


def test_failed_writes_are_one_line(tmp_path: Path) -> None:
    from tdm_r1.errors import user_error_message

    full = OSError(28, "No space left on device", "/data/out.csv")
    assert user_error_message(full) == (
        "no space left on device writing /data/out.csv: free space or choose another folder"
    )
    denied = PermissionError(13, "Permission denied", "/ro/x")
    assert "/ro/x: permission denied" in user_error_message(denied)
    assert (
        user_error_message(IsADirectoryError(21, "Is a directory", "/tmp"))
        == "/tmp is a folder; give a file path"
    )
    assert user_error_message(RuntimeError("a bug")) is None  # bugs keep their traceback


# ---------------------------------------------------------------------------- 14: numbers
def test_numbers_are_checked_before_any_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import tdm_r1.train.trainer as trainer

    monkeypatch.setattr(trainer, "Trainer", None)  # any use would raise TypeError
    train = ["train", "--reward", "ocr"]
    for key in ("rollout.prompts_per_epoch=0", "rollout.batch_size=-1", "rollout.group_size=0"):
        one_line_error(runner.invoke(app, [*train, "--set", key]), key.split("=")[0], ">= 1")
    _bad_parameter(runner.invoke(app, [*train, "--max-epochs", "0"]), "--max-epochs")
    one_line_error(runner.invoke(app, [*train, "--set", "max_epochs=0"]), "max_epochs must be >= 1")
    _bad_parameter(runner.invoke(app, [*train, "--num-processes", "0"]), "--num-processes")
    _bad_parameter(runner.invoke(app, ["eval", "-m", "toy-4step", "--num-processes", "0"]), "--num-processes")
    _bad_parameter(runner.invoke(app, ["eval", "-m", "toy-4step", "--limit", "0"]), "--limit")
    one_line_error(runner.invoke(app, ["train", "--reward", "ocr=0"]), "every reward weight is 0")
    one_line_error(runner.invoke(app, ["train", "--reward", "ocr="]), "'ocr=' has '=' but no weight")


def test_parse_reward_specs_rules() -> None:
    assert parse_reward_specs(["ocr=0.7", "pickscore=0.3"]) == {"ocr": 0.7, "pickscore": 0.3}
    assert parse_reward_specs(["ocr=1", "pickscore=0"]) == {"ocr": 1.0, "pickscore": 0.0}
    for bad, text in (
        ("ocr=", "no weight"),
        ("=0.5", "no reward name"),
        ("ocr=0", "every reward weight is 0"),
    ):
        with pytest.raises(ConfigError, match=text):
            parse_reward_specs([bad])


class _Const(Reward):
    name = "const"

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, images, prompts, metadata):
        n = len(prompts)
        nan = math.isnan(self.value)
        return RewardOutput(torch.full((n,), self.value), {NAN_REASON: ["no score" if nan else ""] * n})


def test_a_weight_zero_reward_never_changes_the_sum() -> None:
    images = torch.rand(2, 3, 8, 8)
    total = WeightedSum([(_Const(0.25), 2.0), (_Const(math.nan), 0.0)])
    out = total(images=images, prompts=["a", "b"])
    assert out.scores.tolist() == [0.5, 0.5]  # before: NaN
    assert out.reasons() == ["", ""]
    assert math.isnan(float(out.details["const"][0]))  # still reported


# ---------------------------------------------------------------------------- 15: misleading texts
def test_misleading_messages_now_say_what_to_do(tmp_path: Path) -> None:
    from tdm_r1.rewards.geneval import CLIP_WEIGHTS, MASK2FORMER_WEIGHTS

    result = runner.invoke(app, ["eval", "-m", "toy-4step", "--reward-option", "ocrfoo"])
    line = one_line_error(result, "--reward-option 'ocrfoo' must look like REWARD.KEY=VALUE")
    assert "--set" not in line
    for wf in (MASK2FORMER_WEIGHTS, CLIP_WEIGHTS):
        assert "--reward-option geneval." in wf.how_to_provide()
    with pytest.raises(ValueError, match="must be a CLI flag"):
        WeightFile("x.y", "o/n", None, "1 MB", "X", "x.path", "x")
