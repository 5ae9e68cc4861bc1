from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.errors import ConfigError, MissingDataError, UnknownNameError
from tdm_r1.eval.benchmark import Benchmark, PromptSource, RewardUse
from tdm_r1.eval.cache import ImageCache
from tdm_r1.eval.results import run_files
from tdm_r1.eval.runner import evaluate
from tdm_r1.registry import BENCHMARKS, MODELS
from tdm_r1.testing.evalkit import CALLS, MODEL_PRESETS, Kit, KitBrightness, kit_fixture  # noqa: F401 (fixture)

CONTRACT = [
    "model",
    "benchmark",
    "metric",
    "mean",
    "std",
    "n",
    "ci_low",
    "ci_high",
    "nfe",
    "reward",
    "reward_version",
    "benchmark_version",
    "tdmbench_version",
    "model_config_hash",
    "protocol",
    "protocol_status",
]
N_ITEMS = 12 * 2 + 10  # kit-geneval: 12 prompts x 2 seeds; kit-bright: 10 prompts


def _csvs(results: Path, model: str = "kit-r1") -> dict[str, bytes]:
    return {b: run_files(b, model, results).csv.read_bytes() for b in ("kit-geneval", "kit-bright")}


def test_end_to_end_contract_and_a_second_run_does_no_work(kit: Kit) -> None:
    results = evaluate("kit-r1", progress=False)
    assert [r.benchmark for r in results] == ["kit-geneval", "kit-bright"]
    assert CALLS.loads == 1 and CALLS.images == N_ITEMS
    first = _csvs(kit.results)

    geneval = pd.read_csv(run_files("kit-geneval", "kit-r1", kit.results).csv)
    assert list(geneval.columns) == CONTRACT
    assert list(geneval["metric"]) == [
        "overall",
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    ]
    assert set(geneval["nfe"]) == {4} and set(geneval["reward"]) == {"kit-geneval"}
    assert geneval.loc[0, "n"] == 24 and set(geneval["n"][1:]) == {4}
    bright = pd.read_csv(run_files("kit-bright", "kit-r1", kit.results).csv)
    assert list(bright.columns) == CONTRACT
    assert list(bright["metric"]) == ["kit-brightness", "kit-darkness"]

    # the summary is the aggregate of the per-sample table
    samples = pd.read_parquet(run_files("kit-bright", "kit-r1", kit.results).samples)
    assert len(samples) == 20
    dark = samples[samples["metric"] == "kit-darkness"]["score"]
    assert bright.loc[1, "mean"] == pytest.approx(dark.mean(), rel=1e-12)
    assert set(samples["role"]) == {"in_domain", "out_of_domain"}
    meta = json.loads(run_files("kit-bright", "kit-r1", kit.results).meta.read_text())
    assert meta["model"]["few_step_base"] == "kit-4step" and meta["model"]["in_domain"] == ["kit-geneval"]
    assert meta["model"]["config"] == {"kit": "kit-r1", "brightness": 0.55}
    assert [r["higher_is_better"] for r in meta["rewards"]] == [True, False]

    CALLS.reset()
    again = evaluate("kit-r1", progress=False)
    assert (CALLS.loads, CALLS.generate_calls, CALLS.reward_calls) == (0, 0, 0)
    assert again[0].stats.image_hits == N_ITEMS and again[0].stats.images_generated == 0
    assert again[0].stats.score_hits == 24 + 20 and again[0].stats.scores_computed == 0
    assert _csvs(kit.results) == first


def test_cli_eval_prints_and_writes(kit: Kit) -> None:
    result = CliRunner().invoke(
        app, ["eval", "--model", "kit-4step", "--benchmark", "kit-bright", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "kit-brightness" in result.output and "10 images generated, 0 from cache" in result.output
    assert list(pd.read_csv(run_files("kit-bright", "kit-4step", kit.results).csv).columns) == CONTRACT


def test_a_preset_object_is_evaluated_and_never_registered(kit: Kit) -> None:
    """``evaluate(preset)``: results under the preset's own name, the same numbers, no registry entry."""
    import dataclasses

    r1 = next(p for p in MODEL_PRESETS if p.name == "kit-r1")
    evaluate("kit-r1", ["kit-bright"], progress=False)
    mine = dataclasses.replace(r1, name="my-run-model")
    got = evaluate(mine, ["kit-bright"], progress=False)
    assert "my-run-model" not in MODELS
    assert (
        got[0].files is not None
        and got[0].files.csv == run_files("kit-bright", "my-run-model", kit.results).csv
    )
    one = pd.read_csv(run_files("kit-bright", "kit-r1", kit.results).csv)
    two = pd.read_csv(got[0].files.csv)
    assert two["mean"].tolist() == one["mean"].tolist() and set(two["model"]) == {"my-run-model"}
    assert got[0].meta["model"]["few_step_base"] == "kit-4step"  # relations come from the object


def test_cli_eval_takes_a_run_folder(kit: Kit, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``tdmbench eval --model runs/<name>/final`` (and ``runs/<name>``): the run's preset.json,
    unregistered, results under its name with its relations; loading is the kit's stand-in."""
    import dataclasses

    from tdm_r1.models.preset import ModelPreset, save_preset_file
    from tdm_r1.testing.evalkit import KitAdapter, KitPreset

    preset = dataclasses.replace(
        MODELS.get("toy-4step"), name="myrun-model", kind="rl", few_step_base="toy-4step", in_domain=("ocr",)
    )
    monkeypatch.chdir(tmp_path)
    save_preset_file(preset, Path("runs/myrun/final/preset.json"))
    stand_in = KitPreset("myrun-model", nfe=4, kind="rl", brightness=0.55)
    monkeypatch.setattr(ModelPreset, "load", lambda self, device=None, **kw: KitAdapter(stand_in, device))
    args = ["eval", "--model", "runs/myrun/final", "--benchmark", "kit-bright", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "10 images generated, 0 from cache" in result.output
    assert "myrun-model" not in MODELS
    meta = json.loads(run_files("kit-bright", "myrun-model", kit.results).meta.read_text())
    assert meta["model"]["name"] == "myrun-model" and meta["model"]["kind"] == "rl"
    assert meta["model"]["few_step_base"] == "toy-4step" and meta["model"]["in_domain"] == ["ocr"]
    # the run folder itself names the same model: same identity, everything from the cache
    result = CliRunner().invoke(app, [*args[:2], "runs/myrun", *args[3:]])
    assert result.exit_code == 0, result.output
    assert "0 images generated, 10 from cache" in result.output


def test_a_killed_generation_resumes_and_loses_nothing(
    kit: Kit, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reference = evaluate(
        "kit-r1", results_root=tmp_path / "clean", cache_root=tmp_path / "clean-cache", progress=False
    )
    assert len(reference) == 2
    CALLS.reset()
    preset = MODELS.get("kit-r1")
    monkeypatch.setattr(preset, "fail_after", 5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate("kit-r1", batch_size=2, progress=False)
    assert CALLS.images == 4  # two batches of 2 finished before the crash
    monkeypatch.setattr(preset, "fail_after", None)
    CALLS.reset()
    evaluate("kit-r1", batch_size=2, progress=False)
    assert CALLS.images == N_ITEMS - 4
    assert _csvs(kit.results) == _csvs(tmp_path / "clean")


def test_a_killed_scoring_resumes(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KitBrightness, "fail_after", 4)
    with pytest.raises(RuntimeError, match="simulated reward crash"):
        evaluate("kit-r1", ["kit-bright"], batch_size=2, progress=False)
    assert CALLS.scored == 4
    monkeypatch.setattr(KitBrightness, "fail_after", None)
    CALLS.reset()
    results = evaluate("kit-r1", ["kit-bright"], batch_size=2, progress=False)
    assert CALLS.images == 0 and CALLS.scored == 10 - 4
    assert results[0].summary.loc[0, "n"] == 9


def test_a_corrupt_cached_image_is_detected_and_regenerated(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    evaluate("kit-r1", ["kit-bright"], progress=False)
    first = run_files("kit-bright", "kit-r1", kit.results).csv.read_bytes()
    samples = pd.read_parquet(run_files("kit-bright", "kit-r1", kit.results).samples)
    png = ImageCache(kit.cache / "eval").png_path(samples["image_key"].iloc[0])
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte
    png.write_bytes(bytes(data))
    CALLS.reset()
    with caplog.at_level(logging.WARNING, logger="tdm_r1.eval.cache"):
        evaluate("kit-r1", ["kit-bright"], progress=False)
    assert "is corrupt" in caplog.text
    assert CALLS.images == 1 and CALLS.reward_calls == 0  # same bytes again -> cached scores reused
    assert run_files("kit-bright", "kit-r1", kit.results).csv.read_bytes() == first


def test_a_nan_score_keeps_its_reason_and_the_run_completes(kit: Kit) -> None:
    (result,) = evaluate("kit-r1", ["kit-bright"], progress=False)
    samples = result.samples
    nan = samples[samples["score"].isna()]
    assert list(nan["prompt"]) == ["picture 3 nan"] and list(nan["metric"]) == ["kit-brightness"]
    assert list(nan["nan_reason"]) == ["prompt asks for a NaN"]
    assert (samples["score"].notna().sum(), len(samples)) == (19, 20)
    n = dict(zip(result.summary["metric"], result.summary["n"], strict=True))
    assert n == {"kit-brightness": 9, "kit-darkness": 10}
    stored = pd.read_parquet(run_files("kit-bright", "kit-r1", kit.results).samples)
    assert stored.loc[stored["score"].isna(), "nan_reason"].tolist() == ["prompt asks for a NaN"]
    assert not math.isnan(result.summary.loc[0, "mean"])


def test_unknown_names_suggest_close_matches(kit: Kit) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'kit-r1'"):
        evaluate("kit-r2", progress=False)
    with pytest.raises(UnknownNameError, match="Did you mean 'kit-bright'"):
        evaluate("kit-r1", ["kit-brigt"], progress=False)
    result = CliRunner().invoke(app, ["eval", "--model", "kit-r1", "--benchmark", "kit-brigt"])
    assert result.exit_code == 2 and "Did you mean 'kit-bright'" in result.output
    assert CALLS.loads == 0


def test_missing_data_fails_before_the_model_loads(
    kit: Kit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TDMBENCH_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingDataError, match="tdmbench data fetch ocr"):
        evaluate("kit-r1", ["kit-bright", "ocr"], progress=False)
    assert CALLS.loads == 0


def test_limit_and_reward_options(kit: Kit) -> None:
    (result,) = evaluate(
        "kit-r1", ["kit-geneval"], limit=3, reward_options={"kit-geneval": {"threshold": 0.9}}
    )
    assert CALLS.images == 6
    assert list(result.summary["metric"]) == ["overall", "single_object", "two_object", "counting"]
    assert result.summary.loc[0, "mean"] == 0.0  # nothing is brighter than 0.9
    assert set(result.samples["reward_options"]) == {"{}"}  # the benchmark's own options
    with pytest.raises(ConfigError, match="which no selected benchmark uses"):
        evaluate("kit-r1", ["kit-bright"], reward_options={"kit-geneval": {"threshold": 0.9}})


def test_identity_from_the_adapter_when_the_preset_has_no_config_dict(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = MODEL_PRESETS[1]
    monkeypatch.setattr(preset, "config_dict", None, raising=False)
    (result,) = evaluate("kit-4step", ["kit-bright"], progress=False)
    assert result.meta["model"]["config"] == {"kit": "kit-4step", "brightness": 0.4}
    CALLS.reset()
    evaluate("kit-4step", ["kit-bright"], progress=False)
    assert (CALLS.loads, CALLS.images) == (1, 0)  # loaded for its identity only


def test_an_unavailable_optional_reward_is_skipped(kit: Kit) -> None:
    bench = Benchmark(
        name="kit-optional",
        version="1",
        prompts=PromptSource(type="toy", generator="tdm_r1.testing.evalkit:bright_prompts", args={"n": 4}),
        in_domain=[RewardUse(name="kit-brightness")],
        out_of_domain=[RewardUse(name="not-installed-judge", optional=True)],
    )
    BENCHMARKS.add(bench.name, bench)
    (result,) = evaluate("kit-r1", ["kit-optional"], progress=False)
    assert list(result.summary["metric"]) == ["kit-brightness"]
    assert result.meta["skipped_metrics"] == ["not-installed-judge"]
    required = Benchmark(
        name="kit-required",
        version="1",
        prompts=PromptSource(type="toy", generator="tdm_r1.testing.evalkit:bright_prompts", args={"n": 4}),
        in_domain=[RewardUse(name="not-installed-judge")],
    )
    with pytest.raises(UnknownNameError, match="not-installed-judge"):
        evaluate("kit-r1", [required], progress=False)


@pytest.mark.gpu
def test_the_runner_uses_the_accelerator_and_matches_the_cpu(kit: Kit, tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    evaluate("kit-r1", progress=False)  # default device: accelerate's, i.e. the GPU
    assert torch.device(CALLS.load_device).type == "cuda"
    evaluate(
        "kit-r1",
        device="cpu",
        results_root=tmp_path / "cpu",
        cache_root=tmp_path / "cpu-cache",
        progress=False,
    )
    assert _csvs(kit.results) == _csvs(tmp_path / "cpu")


@pytest.mark.slow
def test_a_real_run_folder_loads_its_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real load path: a run folder holding toy-4step's preset gives toy-4step's images and numbers."""
    import dataclasses

    from tdm_r1.models.preset import save_preset_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TDMBENCH_CACHE", str(tmp_path / "cache"))
    save_preset_file(
        dataclasses.replace(MODELS.get("toy-4step"), name="copy"), Path("runs/copy/final/preset.json")
    )
    kw = dict(limit=1, device="cpu", progress=False, results_root=tmp_path / "results")
    ours = evaluate("runs/copy/final", ["toy-geneval"], **kw)[0]
    theirs = evaluate("toy-4step", ["toy-geneval"], **kw)[0]
    assert "copy" not in MODELS and ours.model == "copy"
    assert ours.samples["image_sha256"].tolist() == theirs.samples["image_sha256"].tolist()
    assert ours.summary["mean"].tolist() == theirs.summary["mean"].tolist()
