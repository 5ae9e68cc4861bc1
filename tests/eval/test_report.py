from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.eval.runner import evaluate
from tdm_r1.testing.browser import BROWSER_SKIP_REASON, chromium_binary
from tdm_r1.testing.evalkit import Kit, kit_fixture  # noqa: F401 (fixture)

CHROMIUM = chromium_binary()


@pytest.fixture
def report(kit: Kit) -> Path:
    for model in ("kit-4step", "kit-r1"):
        evaluate(model, progress=False)
    result = CliRunner().invoke(app, ["report", "--results-dir", str(kit.results), "--prompts", "3"])
    assert result.exit_code == 0, result.output
    return kit.results / "report" / "index.html"


def test_report_page_references_only_files_beside_it(report: Path) -> None:
    page = report.read_text()
    assert page.count('<table class="leaderboard"') == 2 and page.count('<table class="grid"') == 2
    sources = re.findall(r'<img src="([^"]+)"', page)
    thumbs = [s for s in sources if s.startswith("thumbs/")]
    assert len(thumbs) == 2 * 2 * 3  # 2 benchmarks x 2 models x 3 prompts
    assert all((report.parent / s).is_file() for s in sources)
    assert "a bright single_object scene 0" in page and "kit-4step" in page


def test_report_page_with_missing_cached_images_says_so(report: Path, kit: Kit) -> None:
    shutil.rmtree(kit.cache / "eval" / "images")
    result = CliRunner().invoke(app, ["report", "--results-dir", str(kit.results), "--prompts", "3"])
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert page.count("image not in cache") == 12 and "thumbs/" not in page


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=BROWSER_SKIP_REASON)
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """Every image decodes (naturalWidth > 0) but one thumbnail deleted on purpose, which the
    page's script must flag: the check can fail."""
    missing = sorted((report.parent / "thumbs").glob("*.png"))[0]
    missing.unlink()
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        report.resolve().as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r'<body data-images-total="(\d+)" data-images-loaded="(\d+)"', dom)
    assert body, dom[:2000]
    total, loaded = int(body.group(1)), int(body.group(2))
    figures = len(list((report.parent / "plots").glob("*.png")))
    assert total == 12 + figures and figures > 0
    assert loaded == total - 1
    assert dom.count('class="broken"') == 1 and f'src="thumbs/{missing.name}"' in dom
    assert dom.count('<table class="leaderboard"') == 2
    assert re.search(r"<td>kit-r1</td>.*?1\.000 ★", dom, re.S)


def test_report_opens_with_the_users_own_work(kit: Kit, tmp_path: Path) -> None:
    """Measured models, then the run's reward curves, image grids, figures; published numbers last."""
    from PIL import Image

    for model in ("kit-4step", "kit-r1"):
        evaluate(model, progress=False)
    (kit.results / "reference").mkdir(parents=True)
    (kit.results / "reference" / "published.csv").write_text(
        "model,nfe,benchmark,metric,value,higher_is_better,source,secondary,note\n"
        "Paper model,4,kit-bright,kit-brightness,0.5,true,a paper (2025),no,\n"
    )
    run = tmp_path / "runs" / "my-demo"
    run.mkdir(parents=True)
    Image.new("RGB", (40, 30), "white").save(run / "curves.png")
    result = CliRunner().invoke(app, ["report", "--results-dir", str(kit.results), "--prompts", "2"])
    assert result.exit_code == 0, result.output
    page = (kit.results / "report" / "index.html").read_text()
    order = [
        page.index('<table class="leaderboard"'),
        page.index('src="runs/my-demo.png"'),
        page.index('<table class="grid"'),
        page.index('<table class="published"'),
    ]
    assert order == sorted(order), order
    assert (kit.results / "report" / "runs" / "my-demo.png").is_file()
    measured = page[: page.index("<h2>Images</h2>")]
    assert "Paper model" not in measured and "Paper model" in page[order[-1] :]
