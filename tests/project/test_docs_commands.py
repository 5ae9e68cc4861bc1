"""Every ``tdmbench`` command shown in README.md and docs/*.md runs (issue 12, item 19).

Offline, a command must either succeed or stop with the message of the weights / optional extra it
needs, never with an error the example itself causes. Training commands run with ``--dry-run``
(config resolved, names and batch shapes checked, nothing loaded). Adjustments, so that the suite
stays fast: ``eval`` runs get ``--limit 1`` and write into a temporary folder; the toy rebuild gets
``--minutes 0``; ``arena`` runs get ``--dry-run``; the commands that generate images with a toy model are marked slow. ``make``
targets are not run here (``make test`` is this suite, ``make demo`` the 25-minute main job).
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tdm_r1.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: What an offline machine may answer instead of success: a weight file or an optional extra.
NEEDS = re.compile(r"not available offline|pip install|could not be downloaded|tdmbench data fetch")
#: Commands that generate images with a toy model (tens of seconds on 2 busy cores).
SLOW = ("eval --model toy-", "generate --model toy-", "plan --")  # plan: a real-size trace, 20-60 s


def shown_commands() -> list[tuple[str, str]]:
    """(``file:line``, command) for every ``tdmbench`` line of every fenced code block."""
    out: list[tuple[str, str]] = []
    for doc in DOCS:
        in_block, pending, start = False, "", 0
        for lineno, raw in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if raw.lstrip().startswith("```"):
                in_block = not in_block
                continue
            if not in_block:
                continue
            line = re.split(r"\s+#\s", raw, maxsplit=1)[0].rstrip()
            if pending:
                pending += " " + line.strip().rstrip("\\").strip()
            elif line.strip().startswith("tdmbench "):
                pending, start = line.strip().rstrip("\\").strip(), lineno
            if pending and not line.endswith("\\"):
                out.append((f"{doc.name}:{start}", pending))
                pending = ""
    return out


COMMANDS = shown_commands()


def test_the_docs_show_the_main_commands() -> None:
    verbs = {_split_global(shlex.split(cmd)[1:])[1][0] for _, cmd in COMMANDS}
    assert {"train", "distill", "eval", "score", "generate", "leaderboard", "report", "ls"} <= verbs
    assert len(COMMANDS) >= 20


def _expand(cmd: str) -> list[list[str]]:
    """``ls rewards|models|...`` stands for one command per kind."""
    args = shlex.split(cmd)[1:]
    if args[0] == "ls" and len(args) > 1 and "|" in args[1]:
        return [["ls", kind] for kind in args[1].split("|")]
    return [args]


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> Iterator[Path]:
    """A working folder with what the examples point at: ./my_images, ./images, prompts files, a label database,
    the committed results (for leaderboard / report); runs and results stay inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TDMBENCH_RESULTS", str(tmp_path / "results"))
    for folder in ("my_images", "images"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (32, 32), "white").save(tmp_path / folder / "0.png")
    (tmp_path / "prompts.jsonl").write_text(
        '{"file": "0.png", "prompt": "a photo of a dog", "tag": "single_object", '
        '"include": [{"class": "dog", "count": 1}]}\n'
    )
    (tmp_path / "prompts.txt").write_text("a red circle\n")
    from tdm_r1.label.db import LabelDB

    LabelDB(tmp_path / "likes.sqlite").close()  # `train --labels likes.sqlite`: a label database
    shutil.copytree(REPO / "results", tmp_path / "results", ignore=shutil.ignore_patterns("report", "plots"))
    shutil.copytree(REPO / "examples", tmp_path / "examples")  # docs/extending.md's plug-ins
    from tdm_r1.testing.plugins import isolated_plugins

    with isolated_plugins():  # a `--plugin` command registers names: not for the next test
        yield tmp_path


def _split_global(args: list[str]) -> tuple[list[str], list[str]]:
    """``tdmbench --plugin X -v train ...`` -> (``["--plugin", "X", "-v"]``, ``["train", ...]``)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] == "--plugin" else 1
    return args[:i], args[i:]


def _adapt(args: list[str], tmp: Path) -> list[str]:
    head, args = _split_global(args)
    return head + _adapt_command(args, tmp)


def _adapt_command(args: list[str], tmp: Path) -> list[str]:
    verb = args[0]
    if verb in ("train", "distill", "arena"):
        return args if "--dry-run" in args else [*args, "--dry-run"]
    if verb == "eval":
        return [*args, "--limit", "1", "--device", "cpu", "--no-progress", "--results-dir", str(tmp / "out")]
    if verb == "generate":
        return [*args, "--device", "cpu"]
    if args[:2] == ["toy", "build"]:
        minutes = args.index("--minutes") + 1
        return [*args[:minutes], "0", *args[minutes + 1 :], "--out", str(tmp / "toy-build")]
    return args


def _params() -> list:
    out = []
    for where, cmd in COMMANDS:
        if "[--" in cmd:  # a synopsis, checked by test_synopsis_options_exist
            continue
        if (
            _split_global(shlex.split(cmd)[1:])[1][0] == "label"
        ):  # serves a web page until stopped: tests/test_label_*.py run it
            continue
        for args in _expand(cmd):
            marks = [pytest.mark.slow] if any(s in " ".join(args) for s in SLOW) else []
            out.append(pytest.param(args, id=f"{where} {' '.join(args)}", marks=marks))
    return out


@pytest.mark.parametrize("args", _params())
def test_shown_command_runs_or_stops_at_its_weights(args: list[str], sandbox: Path) -> None:
    result = CliRunner().invoke(app, _adapt(args, sandbox))
    if result.exit_code == 0:
        if _split_global(args)[1][0] in ("train", "distill"):
            assert "config OK" in result.output
        return
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert NEEDS.search(result.output), f"the example itself fails: {result.output}"


def test_synopsis_options_exist() -> None:
    synopses = [(where, cmd) for where, cmd in COMMANDS if "[--" in cmd]
    assert synopses
    for where, cmd in synopses:
        verb = shlex.split(cmd)[1]
        text = " ".join(CliRunner().invoke(app, [verb, "--help"], terminal_width=200).output.split())
        for option in re.findall(r"--[a-z][a-z-]*", cmd):
            assert option in text, f"{where}: {verb} has no option {option}"
