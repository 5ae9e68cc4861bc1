"""The RL method arena: its grid, equal budget, resumable table, error rows, and what it renders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tdm_r1.arena import run as arena_run
from tdm_r1.arena.grid import DEFAULT_CELLS, Cell, cell_config, cell_hash, select_cells
from tdm_r1.cli import app
from tdm_r1.errors import ConfigError
from tdm_r1.eval import leaderboard
from tdm_r1.eval.arena_table import read_table, table_path, to_markdown
from tdm_r1.registry import BENCHMARKS
from tdm_r1.toyworld.grammar import benchmark_prompts

runner = CliRunner()


def test_the_default_grid_is_the_issues_twelve_cells_and_subsets_select() -> None:
    cells = select_cells()
    assert len(cells) == 12 and {c.reward for c in cells} == {"geneval", "ocr"}
    assert {(c.method, c.model) for c in cells} == set(DEFAULT_CELLS)
    sub = select_cells(methods=["dgpo"], rewards=["ocr"])
    assert [(c.method, c.model, c.reward) for c in sub] == [
        ("dgpo", "toy-teacher", "ocr"),
        ("dgpo", "toy-4step", "ocr"),
    ]
    with pytest.raises(ConfigError, match="unknown arena method grpo: choose from tdm-r1, flow-grpo"):
        select_cells(methods=["grpo"])
    with pytest.raises(ConfigError, match="no arena cell"):
        select_cells(methods=["diffusionnft"], models=["toy-4step"])


@pytest.mark.parametrize("cell", select_cells(), ids=lambda c: f"{c.reward}-{c.slug}")
def test_every_cell_trains_its_method_from_its_model_with_its_reward_at_the_budget(
    cell: Cell, tmp_path: Path
) -> None:
    cfg = cell_config(cell, 2048, tmp_path)
    assert cfg.method_name == cell.method and cfg.model.name == cell.model
    assert set(cfg.rewards) == {cell.reward}
    assert cfg.max_epochs * cfg.samples_per_epoch == 2048  # the equal budget, in reward evaluations
    assert cfg.register_as is None and cfg.eval_benchmarks == [] and cfg.max_minutes == 0
    assert cfg.run_dir() == tmp_path / cell.reward / f"{cell.slug}-b2048"


def test_a_budget_that_is_not_whole_epochs_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use a multiple of 64"):
        cell_config(Cell("dgpo", "toy-4step", "ocr"), 100, tmp_path)
    res = runner.invoke(app, ["arena", "--budget", "100", "--runs-dir", str(tmp_path), "--dry-run"])
    assert res.exit_code == 2 and "use a multiple of 64" in res.output and "Traceback" not in res.output


def test_the_cell_hash_follows_the_config_and_the_suites(tmp_path: Path) -> None:
    cell = Cell("flow-grpo", "toy-4step", "geneval")
    suites = {"toy-geneval-arena": "1", "toy-ocr-arena": "1"}
    a = cell_hash(cell_config(cell, 1024, tmp_path), suites)
    assert a == cell_hash(
        cell_config(cell, 1024, tmp_path / "elsewhere"), suites
    )  # the folder is not the config
    assert a != cell_hash(cell_config(cell, 2048, tmp_path), suites)
    assert a != cell_hash(cell_config(cell, 1024, tmp_path), {**suites, "toy-ocr-arena": "2"})


def test_arena_suites_are_balanced_subsets_of_the_full_toy_suites() -> None:
    for small, full, per_task in (("toy-geneval-arena", "toy-geneval", 16), ("toy-ocr-arena", "toy-ocr", 24)):
        s, f = BENCHMARKS.get(small), BENCHMARKS.get(full)
        full_items = {(w.prompt.id, w.prompt.text, w.seed) for w in f.work_items()}
        items = s.work_items()
        assert {(w.prompt.id, w.prompt.text, w.seed) for w in items} <= full_items
        tasks = pd.Series([w.prompt.id.rsplit("-", 1)[0] for w in items]).value_counts()
        assert set(tasks) == {per_task * len(s.seeds)}  # every task the same number of images
    with pytest.raises(ValueError, match="per_task must be in 1..48"):
        benchmark_prompts("geneval", per_task=0)


def _metrics(run: Path, epochs: list[int]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = [
        {
            "epoch": e,
            "samples": 64 * e,
            "time_epoch_s": 2.0 + i,
            "time_rollout_s": 1.0,
            "reward_mean": 0.1 * e,
            "peak_mem_mb": 100.0 + e,
        }
        for i, e in enumerate(epochs)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))


def test_training_stats_count_a_resumed_epoch_once(tmp_path: Path) -> None:
    _metrics(tmp_path, [1, 2, 2, 3])  # epoch 2 logged again after a resume from its checkpoint
    s = arena_run.training_stats(tmp_path)
    assert s["epochs"] == 3 and s["reward_evals"] == 192
    assert s["wall_clock_s"] == pytest.approx(2.0 + 4.0 + 5.0)  # the last record of each epoch
    assert s["peak_mem_mb"] == 103.0
    assert [c["wall_clock_s"] for c in s["curve"]] == pytest.approx([2.0, 6.0, 11.0])


def _fake_measure(cell: Cell, cfg, paths, batch_size, progress) -> dict:  # noqa: ANN001
    return {
        "nfe": 4,
        "start_nfe": 4,
        "in_start": 0.5,
        "in_value": 0.6,
        "in_delta": 0.1,
        "in_ci_low": 0.05,
        "in_ci_high": 0.15,
        "in_significant": True,
        "ood_start": 0.7,
        "ood_value": 0.69,
        "ood_delta": -0.01,
        "ood_ci_low": -0.04,
        "ood_ci_high": 0.02,
        "ood_significant": False,
    }


def _ok_row(cell: Cell) -> dict:
    """A finished cell's row: the arena's own identity columns, one epoch of 64 evaluations, the
    fake measurement above."""
    stats = {"epochs": 1, "reward_evals": 64, "train_images": 64, "wall_clock_s": 4.0, "peak_mem_mb": 900.0}
    measured = _fake_measure(cell, None, None, None, None)  # type: ignore[arg-type]
    return arena_run._base_row(cell, "h", 64) | stats | measured | {"status": "ok", "error": ""}


def test_a_failed_cell_is_recorded_the_grid_goes_on_and_done_cells_are_not_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[str] = []

    def fake_train(cfg, debug=False) -> None:  # noqa: ANN001
        trained.append(cfg.name)
        if "teacher" in cfg.name:
            raise RuntimeError("training failed (exit 2): out of patience")
        _metrics(cfg.run_dir(), [1])

    monkeypatch.setattr(arena_run, "train_cell", fake_train)
    monkeypatch.setattr(arena_run, "measure_cell", _fake_measure)
    paths = arena_run.ArenaPaths(results=tmp_path / "results", runs=tmp_path / "runs")
    cells = select_cells(methods=["dgpo"], rewards=["ocr"])  # teacher cell first: it fails
    tables = arena_run.run_grid(cells, 64, paths, progress=False, echo=lambda s: None)
    t = read_table(table_path(paths.results, "ocr"))
    assert list(t["status"]) == ["error", "ok"] and "out of patience" in t["error"].iloc[0]
    assert t["reward_evals"].iloc[1] == 64 and t["in_delta"].iloc[1] == pytest.approx(0.1)
    assert tables["ocr"].shape == t.shape
    curves = pd.read_csv(arena_run.curves_path(paths, "ocr"))
    assert set(curves["model"]) == {"toy-4step"}

    trained.clear()
    arena_run.run_grid(cells, 64, paths, progress=False, echo=lambda s: None)
    assert trained == ["arena-ocr-dgpo-teacher"]  # the failed cell is retried, the done one is not
    trained.clear()
    arena_run.run_grid(
        select_cells(methods=["dgpo"], rewards=["ocr"], models=["toy-4step"]),
        128,
        paths,
        progress=False,
        echo=lambda s: None,
    )
    assert trained == ["arena-ocr-dgpo-4step"]  # another budget is another config


def test_the_error_line_of_a_failed_child_is_its_one_line_message() -> None:
    log = "INFO loading\r epoch 1/2 |###\nerror: model 'x' has no unconditional branch\n"
    assert arena_run._error_line(log) == "model 'x' has no unconditional branch"
    assert arena_run._error_line("Traceback\n  File x\nValueError: boom\n") == "ValueError: boom"


def test_arena_tables_render_in_the_leaderboard_with_verdicts_and_errors(tmp_path: Path) -> None:
    ok = _ok_row(Cell("dgpo", "toy-4step", "ocr"))
    err = {**ok, "method": "flow-grpo", "model": "toy-teacher", "status": "error", "error": "bad sampler"}
    table = arena_run.upsert(arena_run.upsert(pd.DataFrame(columns=list(ok)), ok), err)
    assert list(table["method"]) == ["flow-grpo", "dgpo"]  # the grid's order
    path = table_path(tmp_path, "ocr")
    path.parent.mkdir(parents=True)
    table.to_csv(path, index=False)
    md = "\n".join(to_markdown({"ocr": read_table(path)}))
    assert (
        "| dgpo @ toy-4step | 4 | 0.500 → 0.600 | +0.100 | [+0.050, +0.150] | **significantly better** |"
        in md
    )
    assert "0.700 → 0.690 | -0.010 | [-0.040, +0.020] | not significant" in md
    assert "| flow-grpo @ toy-teacher | | error: bad sampler |" in md
    lb = leaderboard.build(tmp_path)
    assert set(lb.arena) == {"ocr"}
    assert "## RL method arena" in leaderboard.to_markdown(lb)


def test_a_spawned_run_reports_its_own_peak_memory_not_its_parents() -> None:
    """A child process started from a parent with a large peak (this test process, which has
    touched 512 MiB more) reports its own peak, and that peak grows with what the child allocates."""
    import subprocess
    import sys

    import torch

    from tdm_r1.devices import peak_memory_mb

    x = torch.ones(128 * 2**20)  # 512 MiB touched here: the parent's peak is now above that
    parent = peak_memory_mb(torch.device("cpu"))
    code = (
        "import torch\n"
        "from tdm_r1.devices import peak_memory_mb\n"
        "before = peak_memory_mb(torch.device('cpu'))\n"
        "y = torch.ones(64 * 2**20)  # 256 MiB, touched\n"
        "print(before, peak_memory_mb(torch.device('cpu')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = (float(v) for v in out.split())
    assert 10 < before < parent - 256 and after >= before + 200  # its own: torch imported, no more
    del x


@pytest.mark.slow
def test_arena_end_to_end_on_the_shipped_toy_models(tmp_path: Path) -> None:
    """One real cell (DGPO on the 4-step student, OCR, one epoch): trained in a child process,
    evaluated with its start model, a row with finite paired CIs, figures; the rerun skips it."""
    args = [
        "arena",
        "--methods",
        "dgpo",
        "--models",
        "toy-4step",
        "--rewards",
        "ocr",
        "--budget",
        "64",
        "--results-dir",
        str(tmp_path / "results"),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    t = read_table(table_path(tmp_path / "results", "ocr"))
    row = t.iloc[0]
    assert row["status"] == "ok" and row["reward_evals"] == 64 and row["nfe"] == 4
    assert row["in_ci_low"] <= row["in_delta"] <= row["in_ci_high"]
    assert row["ood_ci_low"] <= row["ood_delta"] <= row["ood_ci_high"] and row["peak_mem_mb"] > 100
    arena = tmp_path / "results" / "arena"
    assert (arena / "ocr.curves.png").is_file() and (arena / "ocr.grid.png").is_file()
    assert "dgpo @ toy-4step" in (arena / "arena.md").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "done (same config), skipped" in again.output


def test_the_report_page_shows_the_arena_tables_and_figures(tmp_path: Path) -> None:
    from PIL import Image

    from tdm_r1.eval.report import write_report

    row = _ok_row(Cell("tdm-r1", "toy-4step", "geneval"))
    path = table_path(tmp_path, "geneval")
    path.parent.mkdir(parents=True)
    arena_run.upsert(pd.DataFrame(columns=list(row)), row).to_csv(path, index=False)
    Image.new("RGB", (8, 8), "white").save(path.parent / "geneval.curves.png")
    page = write_report(tmp_path, runs_root=tmp_path / "no-runs").read_text()
    assert '<table class="arena" data-reward="geneval">' in page and "tdm-r1 @ toy-4step" in page
    assert 'src="arena/geneval.curves.png"' in page
    assert (tmp_path / "report" / "arena" / "geneval.curves.png").is_file()


def test_the_start_is_the_start_weights_sampled_as_the_trained_model_samples(tmp_path: Path) -> None:
    """DiffusionNFT exports a CFG-free sampler of the CFG teacher: its start is the teacher without CFG."""
    from tdm_r1.models.base import save_preset_file
    from tdm_r1.registry import MODELS

    teacher = MODELS.get("toy-teacher")
    final = tmp_path / "final"
    final.mkdir()
    save_preset_file(teacher.with_overrides(name="run", guidance=1.0), final / "preset.json")
    start = arena_run.start_model(Cell("diffusionnft", "toy-teacher", "geneval"), final)
    assert start.name == "toy-teacher-50steps-cfg1" and start.sampling.guidance == 1.0
    assert start.sampling.nfe == 50 and start.hub_id == teacher.hub_id and start.lora is None
    save_preset_file(teacher.with_overrides(name="run"), final / "preset.json")
    assert arena_run.start_model(Cell("dgpo", "toy-teacher", "geneval"), final) == "toy-teacher"
