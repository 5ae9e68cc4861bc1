"""GenEval interoperability: the official generation layout in, the official results JSONL out.

The round trip is checked against an independent reading of the official summary rules
(``summary_scores.py``): images grouped by ``tag`` in order of first appearance, each task's
accuracy the mean of ``correct``, overall = the unweighted mean of the task accuracies, and a
prompt (grouped by its ``metadata`` string) correct when any of its images is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from tdm_r1.apps.toybuild.render import render_batch
from tdm_r1.cli import app
from tdm_r1.eval.geneval_official import EMPTY_SAMPLES, NO_METADATA, read_generation_layout
from tdm_r1.eval.runner import evaluate
from tdm_r1.rewards.geneval import GENEVAL_TASKS, geneval_summary
from tdm_r1.testing.evalkit import Kit, kit_fixture  # noqa: F401 (fixture)
from tdm_r1.toyworld.grammar import benchmark_prompts


def official_summary(jsonl: Path) -> dict[str, Any]:
    """The official summary rules, read independently from the JSONL file."""
    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    by_tag: dict[str, list[bool]] = {}
    by_prompt: dict[str, list[bool]] = {}
    for r in records:
        assert isinstance(r["correct"], bool)
        by_tag.setdefault(r["tag"], []).append(r["correct"])
        by_prompt.setdefault(r["metadata"], []).append(r["correct"])
    tasks = {t: sum(v) / len(v) for t, v in by_tag.items()}
    return {
        "images": len(records),
        "prompts": len(by_prompt),
        "correct_prompts": sum(any(v) for v in by_prompt.values()) / len(by_prompt),
        "tasks": tasks,
        "overall": sum(tasks.values()) / len(tasks),
    }


def write_layout(root: Path, per_task: int = 2) -> list[dict[str, Any]]:
    """Official generation folders for toy GenEval prompts: sample 0 drawn from the prompt itself,
    sample 1 from another prompt (so some images are wrong), plus a grid.png the reader must
    ignore; folder 98 lacks metadata.jsonl and folder 99 has an empty samples/."""
    cases = benchmark_prompts("geneval", "test", seed=0)
    chosen = [c for t in GENEVAL_TASKS for c in [c for c in cases if c["tag"] == t][:per_task]]
    metas = [{k: v for k, v in c.items() if k not in ("id", "seed_offset")} for c in chosen]
    own = render_batch(metas, seed=1)
    other = render_batch(metas[1:] + metas[:1], seed=2)
    for i, meta in enumerate(metas):
        folder = root / f"{i:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        Image.fromarray(own[i]).save(folder / "samples" / "0000.png")
        Image.fromarray(other[i]).save(folder / "samples" / "0001.png")
        Image.fromarray(np.hstack([own[i], other[i]])).save(folder / "grid.png")
    (root / "00098" / "samples").mkdir(parents=True)
    Image.fromarray(own[0]).save(root / "00098" / "samples" / "0000.png")
    (root / "00099" / "samples").mkdir(parents=True)
    (root / "00099" / "metadata.jsonl").write_text(json.dumps(metas[0]) + "\n")
    return metas


def test_layout_reader_skips_broken_prompt_folders_with_their_reason(tmp_path: Path) -> None:
    metas = write_layout(tmp_path)
    layout = read_generation_layout(tmp_path)
    assert len(layout.files) == 2 * len(metas) and all("grid" not in f for f in layout.files)
    assert layout.files[:2] == ["00000/samples/0000.png", "00000/samples/0001.png"]
    assert layout.rows["00001/samples/0001.png"]["include"] == metas[1]["include"]
    assert layout.problems == [("00098", NO_METADATA), ("00099", EMPTY_SAMPLES)]


def test_score_round_trip_matches_the_official_summary_rules(tmp_path: Path) -> None:
    images = tmp_path / "geneval_outdir"
    metas = write_layout(images)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app,
        ["score", str(images), "--reward", "geneval", "--reward-option", "geneval.backend=shapes",
         "--out", str(out), "--batch-size", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    problems = df[df["file"].isin(["00098/", "00099/"])].set_index("file")
    assert (
        problems.loc["00098/", "nan_reason"] == NO_METADATA
        and problems.loc["00099/", "nan_reason"] == EMPTY_SAMPLES
    )
    assert problems["score"].isna().all()
    scored = df[~df["file"].isin(["00098/", "00099/"])]
    assert len(scored) == 2 * len(metas) and scored["score"].notna().all()
    assert 0 < scored["correct"].mean() < 1  # both right and wrong images: the rules are exercised

    jsonl = tmp_path / "scores.geneval_results.jsonl"
    assert f"wrote {jsonl}" in result.output.replace("\n", "")
    ours = geneval_summary(scored, column="correct", tag_column="tag")
    theirs = official_summary(jsonl)
    assert theirs["images"] == 2 * len(metas) and theirs["prompts"] == len(metas)
    assert list(theirs["tasks"]) == list(GENEVAL_TASKS)  # first-appearance order of the folders
    for task in GENEVAL_TASKS:
        assert theirs["tasks"][task] == pytest.approx(ours[task], abs=1e-12)
    assert theirs["overall"] == pytest.approx(ours["overall"], abs=1e-12)
    record = json.loads(jsonl.read_text().splitlines()[0])
    assert record["filename"] == "00000/samples/0000.png" and record["prompt"] == metas[0]["prompt"]
    assert json.loads(record["metadata"])["include"] == metas[0]["include"]
    assert set(record) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}
    for boxes in json.loads(record["details"]).values():
        assert all(len(b) == 5 for b in boxes)  # [x0, y0, x1, y1, score], GenEval's layout


def test_eval_writes_the_official_results_jsonl(kit: Kit) -> None:
    (res,) = evaluate("kit-4step", ["kit-geneval"], progress=False)
    jsonl = res.files.geneval_results
    assert jsonl.is_file()
    theirs = official_summary(jsonl)
    summary = res.summary.set_index("metric")["mean"]
    assert theirs["images"] == len(res.samples) and theirs["prompts"] == res.samples["prompt_id"].nunique()
    assert theirs["overall"] == pytest.approx(summary["overall"], abs=1e-12)
    for task, value in theirs["tasks"].items():
        assert value == pytest.approx(summary[task], abs=1e-12)
    first = json.loads(jsonl.read_text().splitlines()[0])
    assert first["filename"] == f"{res.samples['prompt_id'].iloc[0]}/samples/0000.png"
