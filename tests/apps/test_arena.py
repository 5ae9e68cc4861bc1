"""The RL method arena: its grid, equal budget, resumable table, error rows, and what it renders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tdm_r1.apps.arena import run as arena_run
from tdm_r1.apps.arena import worker
from tdm_r1.apps.arena.grid import (
    Cell,
    cell_config,
    cell_hash,
    checkpoint_epochs,
    default_cells,
    select_cells,
    teacher_cells,
)
from tdm_r1.cli import app
from tdm_r1.errors import ConfigError
from tdm_r1.eval import leaderboard, leaderboard_md
from tdm_r1.eval.arena_table import COLUMNS, read_table, table_path, to_markdown
from tdm_r1.registry import BENCHMARKS
from tdm_r1.toyworld.grammar import benchmark_prompts, rl_unseen_ids

runner = CliRunner()


def test_the_default_grid_is_every_method_from_the_student_over_three_seeds_and_subsets_select() -> None:
    cells = select_cells()
    assert len(cells) == 4 * 2 * 3 and {c.reward for c in cells} == {"geneval", "ocr"}
    assert {(c.method, c.model) for c in cells} == set(default_cells())
    assert [m for m, _ in default_cells()] == ["tdm-r1", "flow-grpo", "diffusionnft", "dgpo"]
    assert {c.model for c in cells} == {"toy-4step"} and {c.seed for c in cells} == {0, 1, 2}
    sub = select_cells(methods=["dgpo"], rewards=["ocr"], models=["toy-4step", "toy-teacher"], seeds=[3])
    assert [(c.method, c.model, c.reward, c.seed) for c in sub] == [
        ("dgpo", "toy-4step", "ocr", 3),
        ("dgpo", "toy-teacher", "ocr", 3),
    ]
    assert {(c.method, c.model) for c in select_cells(models=["toy-teacher"])} == set(teacher_cells())
    with pytest.raises(ConfigError, match="unknown arena method grpo: choose from tdm-r1, flow-grpo"):
        select_cells(methods=["grpo"])
    with pytest.raises(ConfigError, match="no arena cell"):
        select_cells(methods=["tdm-r1"], models=["toy-teacher"])
    with pytest.raises(ConfigError, match="distinct integers"):
        select_cells(seeds=[1, 1])


@pytest.mark.parametrize(
    "cell", select_cells(models=["toy-4step", "toy-teacher"], seeds=[0]), ids=lambda c: f"{c.reward}-{c.slug}"
)
def test_every_cell_trains_its_method_from_its_model_with_its_reward_at_the_budget(
    cell: Cell, tmp_path: Path
) -> None:
    cfg = cell_config(cell, 2048, tmp_path)
    assert cfg.method_name == cell.method and cfg.model.name == cell.model
    assert set(cfg.rewards) == {cell.reward} and cfg.data.split == "rl"  # trains on seen prompts only
    assert cfg.max_epochs * cfg.samples_per_epoch == 2048  # the equal budget, in reward evaluations
    assert cfg.register_as is None and cfg.eval_benchmarks == [] and cfg.max_minutes == 0
    assert cfg.run_dir() == tmp_path / cell.reward / f"{cell.slug}-b2048-s0"
    assert cfg.export_epochs == [8, 16] and cfg.max_epochs == 32  # a quarter and a half; final/ is the rest


def test_the_seed_is_the_runs_seed_and_its_own_folder(tmp_path: Path) -> None:
    a, b = (cell_config(Cell("dgpo", "toy-4step", "ocr", s), 128, tmp_path) for s in (0, 1))
    assert (a.seed, b.seed) == (0, 1) and a.run_dir() != b.run_dir()
    assert cell_hash(a, {}) != cell_hash(b, {})
    assert (
        checkpoint_epochs(2) == [1, 2] and checkpoint_epochs(16) == [4, 8, 16] and checkpoint_epochs(1) == [1]
    )


def test_a_budget_that_is_not_whole_epochs_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use a multiple of 64"):
        cell_config(Cell("dgpo", "toy-4step", "ocr"), 100, tmp_path)
    res = runner.invoke(app, ["arena", "--budget", "100", "--runs-dir", str(tmp_path), "--dry-run"])
    assert res.exit_code == 2 and "use a multiple of 64" in res.output and "Traceback" not in res.output


def test_the_cell_hash_follows_the_config_and_the_suites(tmp_path: Path) -> None:
    cell = Cell("flow-grpo", "toy-4step", "geneval")
    suites = {"toy-geneval-rl": "1", "toy-ocr-rl": "1"}
    a = cell_hash(cell_config(cell, 1024, tmp_path), suites)
    assert a == cell_hash(
        cell_config(cell, 1024, tmp_path / "elsewhere"), suites
    )  # the folder is not the config
    assert a != cell_hash(cell_config(cell, 2048, tmp_path), suites)
    assert a != cell_hash(cell_config(cell, 1024, tmp_path), {**suites, "toy-ocr-rl": "2"})


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


@pytest.mark.parametrize(
    ("small", "full", "task"),
    [("toy-geneval-rl", "toy-geneval", "geneval"), ("toy-ocr-rl", "toy-ocr", "ocr")],
)
def test_the_v2_arena_suites_are_half_unseen_in_every_task_that_has_unseen_cases(
    small: str, full: str, task: str
) -> None:
    s, f = BENCHMARKS.get(small), BENCHMARKS.get(full)
    full_items = {(w.prompt.id, w.prompt.text, w.seed) for w in f.work_items()}
    assert {
        (w.prompt.id, w.prompt.text, w.seed) for w in s.work_items()
    } <= full_items  # same cases and seeds
    cases = pd.DataFrame({"id": sorted({w.prompt.id for w in s.work_items()})})
    cases["task"] = cases["id"].str.rsplit("-", n=1).str[0]
    cases["unseen"] = cases["id"].isin(rl_unseen_ids(task))
    share = cases.groupby("task")["unseen"].mean().to_dict()
    assert (
        share.pop("single_object", 0.0) == 0.0 and share.pop("color_attr", 1.0) == 1.0
    )  # none / all held out
    assert set(share.values()) == {0.5}
    assert cases["unseen"].mean() == 0.5


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


def _fake_measure(cell: Cell, name: str, start, paths, batch_size, progress) -> dict:  # noqa: ANN001
    """A checkpoint's measurement: the in-domain gain grows with the checkpoint's reward evaluations."""
    evals = int(name.rsplit("-r", 1)[1])
    d = 0.1 * evals / 128
    out = {"start_model": start, "checkpoint": name, "start_nfe": 4}
    for pre, delta in (("in_", d), ("in_seen_", d + 0.02), ("in_unseen_", d - 0.02), ("ood_", -0.01)):
        out |= {
            f"{pre}start": 0.5,
            f"{pre}value": 0.5 + delta,
            f"{pre}delta": delta,
            f"{pre}ci_low": delta - 0.05,
            f"{pre}ci_high": delta + 0.05,
            f"{pre}significant": abs(delta) > 0.05,
        }
    return out


class _FakeProcess:
    """A cell's worker that 'trains' at once: metrics.jsonl and final/preset.json; teacher cells fail."""

    started: list[str] = []

    def __init__(self, cell: Cell, cfg, results, **kw) -> None:  # noqa: ANN001, ANN003
        from tdm_r1.models.preset import save_preset_file
        from tdm_r1.registry import MODELS

        self.cell, self.cfg, self.digest = cell, cfg, ""
        _FakeProcess.started.append(cfg.name)
        _metrics(cfg.run_dir(), list(range(1, cfg.max_epochs + 1)))
        (cfg.run_dir() / "final").mkdir(parents=True, exist_ok=True)
        save_preset_file(
            MODELS.get(cell.model).with_overrides(name=cfg.name), cfg.run_dir() / "final" / "preset.json"
        )

    def wait(self) -> None:
        if self.cell.model == "toy-teacher":
            raise RuntimeError("training failed (exit 2): out of patience")

    def poll(self) -> bool:
        self.wait()
        return True


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_cell_is_recorded_the_grid_goes_on_and_done_cells_are_not_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    monkeypatch.setattr(arena_run, "CellProcess", _FakeProcess)
    monkeypatch.setattr(arena_run, "measure_checkpoint", _fake_measure)
    _FakeProcess.started = []
    paths = arena_run.ArenaPaths(results=tmp_path / "results", runs=tmp_path / "runs")
    cells = select_cells(methods=["dgpo"], rewards=["ocr"], models=["toy-teacher", "toy-4step"], seeds=[0, 1])
    tables = arena_run.run_grid(cells, 128, paths, jobs=jobs, progress=False, echo=lambda s: None)
    t = read_table(table_path(paths.results, "ocr"))
    # the grid's order: the student cells first, seed by seed, checkpoint by checkpoint; then the failures
    assert list(zip(t["model"], t["seed"], t["epoch"], t["status"], strict=True)) == [
        ("toy-4step", 0, 1, "ok"),
        ("toy-4step", 0, 2, "ok"),
        ("toy-4step", 1, 1, "ok"),
        ("toy-4step", 1, 2, "ok"),
        ("toy-teacher", 0, 2, "error"),
        ("toy-teacher", 1, 2, "error"),
    ]
    assert "out of patience" in t["error"].iloc[-1]
    assert list(t["reward_evals"].iloc[:2]) == [64, 128] and list(t["in_delta"].iloc[:2]) == pytest.approx(
        [0.05, 0.1]
    )
    assert list(t["checkpoint"].iloc[:2]) == ["arena-ocr-dgpo-4step-s0-r64", "arena-ocr-dgpo-4step-s0-r128"]
    assert list(t["wall_clock_s"].iloc[:2]) == pytest.approx([2.0, 5.0])  # training spent by each checkpoint
    assert tables["ocr"].shape == t.shape
    curves = pd.read_csv(arena_run.curves_path(paths, "ocr"))
    assert set(zip(curves["model"], curves["seed"], strict=True)) == {("toy-4step", 0), ("toy-4step", 1)}

    _FakeProcess.started = []
    arena_run.run_grid(cells, 128, paths, jobs=jobs, progress=False, echo=lambda s: None)
    assert sorted(_FakeProcess.started) == ["arena-ocr-dgpo-teacher-s0", "arena-ocr-dgpo-teacher-s1"]
    _FakeProcess.started = []
    arena_run.run_grid(cells[:1], 256, paths, progress=False, echo=lambda s: None)
    assert _FakeProcess.started == ["arena-ocr-dgpo-4step-s0"]  # another budget is another config


def test_the_error_line_of_a_failed_child_is_its_one_line_message() -> None:
    log = "INFO loading\r epoch 1/2 |###\nerror: model 'x' has no unconditional branch\n"
    assert worker._error_line(log) == "model 'x' has no unconditional branch"
    assert worker._error_line("Traceback\n  File x\nValueError: boom\n") == "ValueError: boom"


def test_arena_tables_render_in_the_leaderboard_pooled_over_seeds_with_errors(tmp_path: Path) -> None:
    from tdm_r1.testing.arena import arena_rows

    table = arena_run.upsert(pd.DataFrame(columns=list(COLUMNS)), arena_rows("dgpo", [0.10, 0.12, 0.14])[:2])
    for rows in (arena_rows("dgpo", [0.10, 0.12, 0.14]), arena_rows("tdm-r1", [0.0, 0.05, 0.01])):
        for seed in (0, 1, 2):
            table = arena_run.upsert(table, [r for r in rows if r["seed"] == seed])
    err = {**arena_rows("dgpo", [0.0])[0], "model": "toy-teacher", "status": "error", "error": "bad sampler"}
    table = arena_run.upsert(table, [err])
    assert list(dict.fromkeys(table["method"])) == ["tdm-r1", "dgpo"]  # the grid's order
    path = table_path(tmp_path, "ocr")
    path.parent.mkdir(parents=True)
    table.to_csv(path, index=False)
    md = "\n".join(to_markdown({"ocr": read_table(path)}))
    assert (
        "| dgpo @ toy-4step | 4 | 3 | 0.500 → 0.620 | +0.120 | [+0.057, +0.183] | **significantly better** |"
        in md
    )
    assert (
        "| tdm-r1 @ toy-4step | 4 | 3 | 0.500 → 0.520 | +0.020 | [-0.046, +0.086] | not significant |" in md
    )
    assert "| tdm-r1 − dgpo @ toy-4step | 3 | -0.100 | [-0.190, -0.010] | **dgpo better** |" in md
    assert (
        "From toy-4step, **dgpo** is best on toy ocr at equal budget (gain +0.120): +0.100 [+0.010, +0.190] over tdm-r1, 3 seeds."
        in md
    )
    assert "- dgpo @ toy-teacher, seed 0: error: bad sampler" in md
    lb = leaderboard.build(tmp_path)
    assert set(lb.arena) == {"ocr"}
    assert "## RL method arena" in leaderboard_md.to_markdown(lb)


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
    """One real cell (DGPO on the 4-step student, OCR, two epochs, two seeds at once): trained and
    evaluated at both checkpoints in child processes, paired with its start model, rows with finite
    CIs (all, seen, unseen), pooled over the seeds, figures; the rerun evaluates nothing."""
    args = [
        "arena",
        "--methods",
        "dgpo",
        "--models",
        "toy-4step",
        "--rewards",
        "ocr",
        "--budget",
        "128",
        "--seeds",
        "0",
        "--seeds",
        "1",
        "--jobs",
        "2",
        "--results-dir",
        str(tmp_path / "results"),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    t = read_table(table_path(tmp_path / "results", "ocr"))
    assert list(zip(t["seed"], t["reward_evals"], strict=True)) == [(0, 64), (0, 128), (1, 64), (1, 128)]
    assert set(t["status"]) == {"ok"} and set(t["nfe"]) == {4}
    for pre in ("in_", "in_seen_", "in_unseen_", "ood_"):
        assert (t[f"{pre}ci_low"] <= t[f"{pre}delta"]).all() and (
            t[f"{pre}delta"] <= t[f"{pre}ci_high"]
        ).all()
    assert (t["peak_mem_mb"] > 100).all() and t["in_delta"].iloc[0] != t["in_delta"].iloc[2]  # seeds differ
    arena = tmp_path / "results" / "arena"
    assert (arena / "ocr.curves.png").is_file() and (arena / "ocr.grid.png").is_file()
    md = (arena / "arena.md").read_text()
    assert "| dgpo @ toy-4step | 4 | 2 |" in md and "In-domain gain against the budget" in md
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.count("done (same config), skipped") == 2


def test_the_report_page_shows_the_arena_tables_and_figures(tmp_path: Path) -> None:
    from PIL import Image

    from tdm_r1.eval.report import write_report
    from tdm_r1.testing.arena import arena_rows

    rows = arena_rows("tdm-r1", [0.1], reward="geneval")
    path = table_path(tmp_path, "geneval")
    path.parent.mkdir(parents=True)
    arena_run.upsert(pd.DataFrame(columns=list(COLUMNS)), rows).to_csv(path, index=False)
    Image.new("RGB", (8, 8), "white").save(path.parent / "geneval.curves.png")
    page = write_report(tmp_path, runs_root=tmp_path / "no-runs").read_text()
    assert '<table class="arena" data-reward="geneval">' in page and "tdm-r1 @ toy-4step" in page
    assert "one seed only on toy geneval" not in page  # one method: no ranking line
    assert "(prompts, 1 seed)" in page  # one seed: its CI over prompts, marked so
    assert 'src="arena/geneval.curves.png"' in page
    assert (tmp_path / "report" / "arena" / "geneval.curves.png").is_file()


def test_the_start_is_the_start_weights_sampled_as_the_trained_model_samples(tmp_path: Path) -> None:
    """DiffusionNFT exports a CFG-free sampler of the CFG teacher: its start is the teacher without CFG."""
    from tdm_r1.models.preset import save_preset_file
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
