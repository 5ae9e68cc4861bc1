"""Test setup: offline hub, shared benchmark data, a private cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDMBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "tdmbench-cache"))


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The official prompt files beside the checkout (``../shared/data``)."""
    if not (SHARED_DATA / "geneval" / "evaluation_metadata.jsonl").is_file():
        pytest.skip(f"official prompt files not found at {SHARED_DATA}")
    monkeypatch.setenv("TDMBENCH_DATA_DIR", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture
def sd35_train_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder is tmp_path and holds stand-ins for the SD3.5 recipes' train prompts files
    (``data/ocr/train.txt``, ``data/geneval/train_metadata.jsonl``: not redistributed; a dry run
    checks that they exist)."""
    monkeypatch.chdir(tmp_path)
    for rel, text in (
        ("data/ocr/train.txt", "a sign that says OPEN\n"),
        ("data/geneval/train_metadata.jsonl", '{"prompt": "a photo of a cat", "tag": "single_object"}\n'),
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD3 pipeline saved to disk (trainer tests)."""
    from tdm_r1.testing import trainkit

    return trainkit.tiny_pipeline_folder(tmp_path_factory.mktemp("tiny") / "pipe")


@pytest.fixture
def registered(tiny_folder: Path):
    """The tiny pipeline registered as preset ``tiny-trainer`` and the ``test-brightness`` reward."""
    from tdm_r1.registry import MODELS, REWARDS
    from tdm_r1.testing import trainkit

    names = trainkit.register(tiny_folder)
    yield tiny_folder
    for n in names:
        MODELS._entries.pop(n, None)
        MODELS._alias.pop(n, None)
    REWARDS._entries.pop("test-brightness", None)
    REWARDS._alias.pop("test-brightness", None)


#: The per-test bound of ``slow`` tests (the default suite's bound is ``timeout`` in pyproject.toml).
SLOW_TIMEOUT_S = 1800


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests get a longer bound than the default one, unless they set their own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say once, at the end, that the browser tests were skipped and how to install Chromium."""
    from tdm_r1.testing.browser import BROWSER_SKIP_REASON

    skipped = [
        r for r in terminalreporter.stats.get("skipped", []) if "browser" in getattr(r, "keywords", {})
    ]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} browser test(s) skipped: {BROWSER_SKIP_REASON}", yellow=True, bold=True
        )
