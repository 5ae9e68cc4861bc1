"""`make test` ends on any machine: every test is bounded, and the browser tests skip cleanly.

A browser test once called ``pytest.skip`` inside a rater thread on a machine without Chromium;
the thread died and the test waited for labels for ever. These tests run the real thing in a
child pytest: the browser module with Chromium hidden from PATH, and a test that hangs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tdm_r1.testing.browser import BROWSER_SKIP_REASON

REPO = Path(__file__).resolve().parents[2]


def _pytest(args: list[str], *, path: str | None = None, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_suite_bounds_every_test(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed (dev extra)"
    assert 0 < float(request.config.getini("timeout")) <= 600


def test_a_hanging_test_fails_within_its_bound(tmp_path: Path) -> None:
    hang = tmp_path / "test_hang.py"
    hang.write_text("import time\n\ndef test_hangs():\n    time.sleep(3600)\n")
    res = _pytest(
        [str(hang), "-o", "timeout=2", "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml")],
        timeout=120,
    )
    assert res.returncode == 1, res.stdout[-2000:]
    assert "Timeout" in res.stdout and "1 failed" in res.stdout


def test_browser_tests_skip_in_bounded_time_without_chromium() -> None:
    """PATH holds only this interpreter's folder: no chromium, no chromedriver."""
    res = _pytest(
        ["tests/label/test_browser.py", "-m", "not slow", "-rs"],
        path=str(Path(sys.executable).parent),
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" not in res.stdout.splitlines()[-1] and "skipped" in res.stdout.splitlines()[-1]
    assert "browser test(s) skipped" in res.stdout and BROWSER_SKIP_REASON in res.stdout
