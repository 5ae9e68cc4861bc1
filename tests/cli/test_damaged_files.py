"""Damaged files the CLI reads (issue: "no silent loss, no traceback", items 5-10).

Each test reproduces a case of the issue that failed before: a cut results file dropped a model
from the leaderboard without a word; garbage CSVs, corrupt LoRAs and YAML alias bombs gave
tracebacks or megabyte-long error lines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.testing.clikit import one_line_error

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    """A copy of the committed toy results (both suites and the published numbers)."""
    root = tmp_path / "results"
    for name in ("toy-ocr", "toy-geneval", "reference"):
        shutil.copytree(REPO / "results" / name, root / name)
    return root


def _leaderboard(root: Path, *extra: str):
    return runner.invoke(app, ["leaderboard", "--results-dir", str(root), "--no-plots", *extra])


# ------------------------------------------------------------------- 5: a cut results file
def test_a_truncated_results_file_is_an_error_not_a_missing_model(committed: Path) -> None:
    whole = _leaderboard(committed)
    assert whole.exit_code == 0, whole.output
    deltas = (committed / "leaderboard_deltas.csv").read_text().splitlines()
    cut = committed / "toy-ocr" / "toy-4step.csv"
    cut.write_bytes(cut.read_bytes()[:100])
    one_line_error(_leaderboard(committed), str(cut), "cut short")
    assert (committed / "leaderboard_deltas.csv").read_text().splitlines() == deltas  # nothing rewritten
    # cut inside the data row: the header is whole, the row is not
    text = (REPO / "results" / "toy-ocr" / "toy-4step.csv").read_text()
    cut.write_text(text[: len(text) - 30])
    one_line_error(_leaderboard(committed), str(cut))
    skipped = _leaderboard(committed, "--skip-broken")
    assert skipped.exit_code == 0, skipped.output
    assert f"warning: left out {cut}" in skipped.output
    md = (committed / "leaderboard.md").read_text()
    assert "Left out (unreadable results files)" in md and str(cut) in md
    # another tool's table next to the results (no meta.json, no result columns) is still ignored
    (committed / "toy-ocr" / "notes.csv").write_text("step,value\n1,2\n")
    shutil.copy(REPO / "results" / "toy-ocr" / "toy-4step.csv", cut)
    again = _leaderboard(committed)
    assert again.exit_code == 0 and (committed / "leaderboard_deltas.csv").read_text().splitlines() == deltas


# --------------------------------------------------------------- 6: garbage and empty CSVs
@pytest.mark.parametrize("content", [b"", b'a,b\n"1,2\n3,4,5,6\n"x', b"\xff\xfe\x00garbage\x00\n"])
def test_garbage_or_empty_csvs_are_one_line_errors_naming_the_file(committed: Path, content: bytes) -> None:
    bad = committed / "toy-ocr" / "toy-4step.csv"
    bad.write_bytes(content)
    one_line_error(_leaderboard(committed), str(bad))
    one_line_error(runner.invoke(app, ["report", "--results-dir", str(committed)]), str(bad))
    published = committed / "reference" / "published.csv"
    shutil.copy(REPO / "results" / "toy-ocr" / "toy-4step.csv", bad)
    published.write_bytes(content)
    one_line_error(_leaderboard(committed), str(published))


@pytest.mark.parametrize("content", [b"", b'image_id,rater\n"oops,\n1,2,3,4\n', b"\xff\xfe\x00\x00"])
def test_label_import_of_a_bad_csv_names_the_file(tmp_path: Path, content: bytes) -> None:
    pytest.importorskip("fastapi")
    from tdm_r1.testing.labelkit import make_db

    db = make_db(tmp_path / "likes.sqlite", {"p": 1})
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    one_line_error(runner.invoke(app, ["label", "--db", str(db.path), "--import", str(bad)]), str(bad))
    assert db.stats()["label_rows"] == 0


def test_a_results_meta_that_is_not_json_names_the_file(committed: Path) -> None:
    meta = committed / "toy-ocr" / "toy-4step.meta.json"
    meta.write_text("{not json")
    one_line_error(_leaderboard(committed), str(meta), "not valid JSON")
    assert pd.read_csv(REPO / "results" / "toy-ocr" / "toy-4step.csv").shape[0] >= 1


# ------------------------------------------------------------------------ 7: a corrupt LoRA
TOY_LORA = REPO / "tdm_r1" / "toyworld" / "weights" / "toy-4step"


def _no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from tdm_r1.models.preset import ModelPreset

    def no_load(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded before its LoRA files were checked")

    monkeypatch.setattr(ModelPreset, "load", no_load)


def _damaged_loras(tmp_path: Path) -> list[tuple[Path, str, str]]:
    """(LoRA folder, file named in the error, what the error says) for each kind of damage."""
    cut = tmp_path / "cut"
    shutil.copytree(TOY_LORA, cut)
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    badjson = tmp_path / "badjson"
    shutil.copytree(TOY_LORA, badjson)
    (badjson / "adapter_config.json").write_text("{not json")
    return [
        (cut, str(weights), "cut short"),
        (badjson, str(badjson / "adapter_config.json"), "not valid JSON"),
    ]


def test_a_corrupt_lora_is_one_line_before_generate_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_load(monkeypatch)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    for lora, named, says in _damaged_loras(tmp_path):
        args = [
            "generate",
            "-m",
            "toy-4step",
            "-p",
            str(prompts),
            "-o",
            str(tmp_path / "out"),
            "--lora-path",
            str(lora),
        ]
        line = one_line_error(runner.invoke(app, args), named, says)
        assert "expected" in line or "copy the file again" in line


def test_a_run_with_a_corrupt_lora_is_one_line_in_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from tdm_r1.models.preset import save_preset_file
    from tdm_r1.registry import MODELS

    _no_load(monkeypatch)
    monkeypatch.setenv("TDMBENCH_CACHE", str(tmp_path / "cache"))
    for k, (lora, named, says) in enumerate(_damaged_loras(tmp_path)):
        preset = dataclasses.replace(MODELS.get("toy-4step"), name=f"bad-{k}", lora=str(lora))
        final = save_preset_file(preset, tmp_path / "runs" / f"bad-{k}" / "final" / "preset.json").parent
        args = [
            "eval",
            "-m",
            str(final),
            "-b",
            "toy-geneval",
            "--limit",
            "1",
            "--device",
            "cpu",
            "--no-progress",
        ]
        one_line_error(runner.invoke(app, [*args, "--results-dir", str(tmp_path / "r")]), named, says)


def test_a_safetensors_header_check_accepts_whole_files() -> None:
    from tdm_r1.weights_check import check_lora

    check_lora(TOY_LORA)  # the shipped file is whole
    check_lora(TOY_LORA / "adapter_model.safetensors")


# ---------------------------------------------------------------------- 8: a YAML alias bomb
BOMB = "name: bomb\neval_benchmarks:\n  - &a [x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{b} [{', '.join(['*' + a] * 8)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)
)


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 500
    result = runner.invoke(app, ["train", "--config", str(bomb), "--dry-run"])
    line = one_line_error(result, str(bomb), "aliases")
    assert len(result.output) < 1000, len(result.output)
    # a long value quoted in an error is cut to an excerpt
    long = tmp_path / "long.yaml"
    long.write_text("max_epochs: " + "9x" * 500_000 + "\n")
    result = runner.invoke(app, ["train", "--config", str(long), "--dry-run", "--reward", "ocr"])
    line = one_line_error(result, "max_epochs", "more characters")
    assert len(line) < 400, len(line)


def test_the_bounded_loader_reads_ordinary_aliases() -> None:
    from tdm_r1.config import safe_load

    assert safe_load("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


# ------------------------------------------------------------- 9: reward options in the dry run
def test_the_dry_run_refuses_a_reward_option_the_run_would_refuse(tmp_path: Path) -> None:
    cfg = tmp_path / "junk.yaml"
    cfg.write_text("reward_options: {ocr: {junk: 1}}\n")
    result = runner.invoke(app, ["train", "--reward", "ocr", "--config", str(cfg), "--dry-run"])
    one_line_error(result, "'junk'", "Valid options")
    result = runner.invoke(
        app, ["train", "--reward", "ocr", "--set", "reward_options.ocr.junk=1", "--dry-run"]
    )
    one_line_error(result, "'junk'")
    ok = runner.invoke(app, ["train", "--reward", "ocr", "--dry-run"])
    assert ok.exit_code == 0 and "config OK" in ok.output, ok.output


# ---------------------------------------------------------------------------------- 10: smaller
def test_a_negative_reward_weight_is_accepted_and_explained() -> None:
    result = runner.invoke(app, ["train", "--reward", "ocr=-1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "negative weight makes training minimise it" in result.output and "config OK" in result.output


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_an_uncreatable_out_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_load(monkeypatch)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    result = runner.invoke(app, ["generate", "-m", "toy-4step", "-p", str(prompts), "-o", "/proc/x"])
    one_line_error(result, "/proc/x", "cannot create folders")


def test_a_symlink_loop_as_prompts_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_load(monkeypatch)
    loop = tmp_path / "loop.txt"
    loop.symlink_to(loop)
    result = runner.invoke(app, ["generate", "-m", "toy-4step", "-p", str(loop), "-o", str(tmp_path / "o")])
    one_line_error(result, str(loop), "symlink loop")


def test_an_interrupted_eval_says_what_is_cached_and_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdm_r1.eval import runner as eval_runner

    def interrupted(runs, model, cache, batch_size, stats, show) -> None:  # noqa: ANN001
        stats.images_generated = 3
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_runner, "_generate_phase", interrupted)
    monkeypatch.setenv("TDMBENCH_CACHE", str(tmp_path / "cache"))
    args = [
        "eval",
        "-m",
        "toy-4step",
        "-b",
        "toy-geneval",
        "--limit",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    result = runner.invoke(app, [*args, "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 130, result.output
    assert "interrupted: 3 new image(s)" in result.output and str(tmp_path / "cache") in result.output
    assert "rerun the same command to resume" in result.output and "Traceback" not in result.output
