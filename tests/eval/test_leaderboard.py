from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.errors import ConfigError
from tdm_r1.eval import leaderboard, leaderboard_md
from tdm_r1.eval.plots import write_all
from tdm_r1.eval.runner import evaluate
from tdm_r1.testing.evalkit import Kit, kit_fixture  # noqa: F401 (fixture)

PUBLISHED = Path(__file__).resolve().parents[2] / "results" / "reference" / "published.csv"


@pytest.fixture
def results(kit: Kit) -> Path:
    """Three measured kit models on both kit suites, plus the real published.csv."""
    for model in ("kit-base", "kit-4step", "kit-r1"):
        evaluate(model, progress=False)
    (kit.results / "reference").mkdir(parents=True)
    shutil.copy(PUBLISHED, kit.results / "reference" / "published.csv")
    return kit.results


def test_published_numbers_each_have_a_source() -> None:
    df = leaderboard.load_published(PUBLISHED)
    assert len(df) > 50 and (df["source"].str.len() > 20).all()
    by = df.set_index(["model", "source", "benchmark", "metric"])["value"]
    tdm_r1 = df[(df["model"] == "TDM-R1 (SD3.5-M)") & (df["metric"] == "overall")]
    assert set(tdm_r1["value"]) == {0.92} and set(tdm_r1["nfe"]) == {4}
    sd35 = df[(df["model"] == "SD3.5-M") & df["source"].str.startswith("DGPO README")]
    assert dict(zip(sd35["benchmark"] + "/" + sd35["metric"], sd35["value"], strict=True))["ocr/ocr"] == 0.59
    assert by.index.is_unique
    assert df.loc[df["source"].str.contains("third-party"), "secondary"].all()


def test_published_rows_without_a_source_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "published.csv"
    bad.write_text(
        "model,nfe,benchmark,metric,value,higher_is_better,source,secondary,note\nX,4,geneval,overall,0.5,true,,no,\n"
    )
    with pytest.raises(ConfigError, match="needs a source"):
        leaderboard.load_published(bad)


def test_leaderboard_keeps_measured_and_reported_apart(results: Path) -> None:
    # a reported number for a name that is also measured must stay a separate row
    with (results / "reference" / "published.csv").open("a") as fh:
        fh.write("kit-r1,4,kit-bright,kit-brightness,0.99,true,a made-up paper,no,\n")
    lb = leaderboard.build(results)
    published = leaderboard.load_published(results / "reference" / "published.csv")
    assert len(lb.reported()) == len(published.groupby(["model", "source"]))
    assert sorted(lb.measured()["model"]) == ["kit-4step", "kit-base", "kit-r1"]
    rows = lb.table[lb.table["model"] == "kit-r1"].set_index("kind")
    assert rows.loc["reported", "kit-bright/kit-brightness"] == 0.99
    measured = pd.read_csv(results / "kit-bright" / "kit-r1.csv").set_index("metric")["mean"]
    assert rows.loc["measured", "kit-bright/kit-brightness"] == measured["kit-brightness"]
    assert rows.loc["measured", "source"].startswith("tdmbench ")
    assert rows.loc["reported", "source"] == "a made-up paper"
    assert lb.table.loc[lb.table["model"] == "SD3.5-M", "kind"].eq("reported").all()


def test_deltas_arrows_and_in_domain_marks(results: Path) -> None:
    lb = leaderboard.build(results)
    m = lb.measured().set_index("model")
    d = lb.deltas.set_index(["relation", "benchmark", "metric"])
    assert set(lb.deltas["model"]) == {"kit-r1"} and len(d) == 2 * (7 + 2) and d.index.is_unique
    col = "kit-bright/kit-darkness"
    dark = d.loc[("few_step_base", "kit-bright", "kit-darkness")]
    assert dark["delta"] == pytest.approx(m.loc["kit-r1", col] - m.loc["kit-4step", col], abs=1e-12)
    assert (
        dark["method"] == "paired-t" and dark["n"] == 10 and dark["ci_low"] < dark["delta"] < dark["ci_high"]
    )
    overall = d.loc[("baseline", "kit-geneval", "overall")]
    assert overall["reference"] == "kit-base" and overall["method"] == "paired-bootstrap"
    assert overall["delta"] == pytest.approx(
        m.loc["kit-r1", "kit-geneval/overall"] - m.loc["kit-base", "kit-geneval/overall"], abs=1e-12
    )
    assert lb.higher_is_better[col] is False and lb.higher_is_better["geneval/overall"] is True
    assert sorted(lb.in_domain) == ["kit-r1"]
    assert "kit-geneval/overall" in lb.in_domain["kit-r1"]
    assert not [c for c in lb.in_domain["kit-r1"] if c.startswith("kit-bright/")]

    md = leaderboard_md.to_markdown(lb)
    assert "kit-darkness ↓" in md and "kit-brightness ↑" in md and "overall ↑" in md
    r1_geneval = next(line for line in md.splitlines() if line.startswith("| kit-r1 | 4 | measured | 1.000"))
    assert r1_geneval.count("★") == 7
    base_line = next(
        line for line in md.splitlines() if line.startswith("| kit-4step | 4 | measured | 0.333")
    )
    assert "★" not in base_line
    assert (
        "| kit-r1 | kit-4step | few-step base |" in md and "| kit-r1 | kit-base | multi-step baseline |" in md
    )
    assert "(secondary source)" in md
    # how each measured RL row was trained (its preset's sources: reward, run, budget)
    from tdm_r1.registry import MODELS

    how = MODELS.get("kit-r1").sources
    assert how and f"- kit-r1: {how}" in md.split("## How the measured RL models were trained")[1]


def test_cli_leaderboard_writes_tables_and_figures(results: Path) -> None:
    result = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(results)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(results / "leaderboard.csv")
    assert list(table.columns[:4]) == ["model", "nfe", "kind", "source"]
    assert set(table["kind"]) == {"measured", "reported"}
    assert "kit-geneval/overall" in table.columns and "geneval/overall" in table.columns
    assert (results / "leaderboard.md").read_text().startswith("# Leaderboard")
    deltas = pd.read_csv(results / "leaderboard_deltas.csv")
    assert len(deltas) == 2 * (7 + 2) and set(deltas["method"]) == {"paired-t", "paired-bootstrap"}
    figures = sorted(p.name for p in (results / "plots").glob("*.png"))
    assert "radar__kit-r1.png" in figures and "kit-bright__kit-darkness.png" in figures
    assert len(figures) == 7 + 2 + 1  # bars for each measured column + one radar (kit-r1)


def test_figures_are_valid_pngs(results: Path, tmp_path: Path) -> None:
    lb = leaderboard.build(results)
    paths = write_all(lb, tmp_path / "plots")
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 100
    (tmp_path / "plots" / "stale.png").write_bytes(b"x")
    assert len(write_all(lb, tmp_path / "plots")) == len(paths)
    assert not (tmp_path / "plots" / "stale.png").exists()


def test_partial_runs_are_labelled_and_tables_reach_notebooks(results: Path) -> None:
    import tdm_r1
    import tdm_r1.eval as tev
    from tdm_r1.eval.results import run_files

    full = run_files("kit-bright", "kit-base", results)
    before = full.csv.read_bytes()
    evaluate("kit-base", ["kit-bright"], limit=4, progress=False)
    assert full.csv.read_bytes() == before  # a partial run never replaces a full one
    source = tev.build_leaderboard(results).table.set_index("model").loc["kit-base", "source"]
    assert source == f"tdmbench {tdm_r1.__version__}"
    for path in (full.csv, full.meta, full.samples):  # without the full run, the partial one shows
        path.unlink()
    lb = tev.build_leaderboard(results)
    source = lb.table.set_index("model").loc["kit-base", "source"]
    assert source == f"tdmbench {tdm_r1.__version__} (kit-bright: --limit 4)"
    summaries = tev.read_summaries(results)
    assert isinstance(summaries, pd.DataFrame) and len(summaries) == 3 * (7 + 2)
    samples = tev.read_samples("kit-bright", "kit-base", results)
    assert len(samples) == 4 * 2
