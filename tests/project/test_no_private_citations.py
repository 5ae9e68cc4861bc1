"""Citations in the shipped text point at public sources, never at notes a user of the package lacks.

The project was built with a set of private research notes beside the checkout
(``../shared/reference/``: ``rl-methods.md``, ``method.md``, ``peers-and-rewards.md``, ...). A
comment, docstring, preset or page that cites one of them (often with a section number) sends the
reader to a file they cannot open. Cite the public source instead: the paper (arXiv id, section or
equation), the repository with commit and file, or a page under ``docs/`` for the project's own
decisions and measurements. This test scans every tracked (or new, not ignored) text file of the
package, the docs, benchmarks, presets, rewards, scripts, examples and tests, plus README.md,
Makefile and pyproject.toml, and names each offending ``file:line``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SELF = Path(__file__).resolve().relative_to(REPO).as_posix()

#: Top-level folders and files that are scanned (results/ is generated output and is not).
SCANNED_DIRS = ("tdm_r1/", "docs/", "benchmarks/", "rewards/", "scripts/", "examples/", "tests/")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")

#: The private notes' file names. The hyphenated ones are cited with or without ``.md``; the two
#: plain words only as file names (``method.md``, ``environment.md``), so ``method`` / ``environment``
#: in prose stay fine.
_NOTES = "rl-methods|peers-and-rewards|toy-feasibility|tdm-r1-audit|style-guide"
PATTERN = re.compile(
    rf"shared/reference|(?<![\w-])(?:{_NOTES})(?:\.md)?(?![\w-])|(?<![\w-])(?:method|environment)\.md\b"
)
#: The path just before a match, e.g. ``docs/`` in ``docs/method.md``: a citation of a file this
#: repository tracks is a normal link, not a private one.
_PREFIX = re.compile(r"[\w./-]*$")


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout (the scanned files are the tracked ones)")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [f for f in out.split("\0") if f]


def _scanned(tracked: list[str]) -> list[str]:
    return [
        f
        for f in tracked
        if (f.startswith(SCANNED_DIRS) or f in SCANNED_FILES) and f != SELF and (REPO / f).is_file()
    ]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (images, weights)
    return data.decode("utf-8", errors="replace")


def _is_repo_link(line: str, match: re.Match[str], file: str, tracked: set[str]) -> bool:
    """True when the match is a path to a file of this repository (from the root or from ``file``)."""
    prefix = _PREFIX.search(line[: match.start()])
    name = (prefix.group(0) if prefix else "") + match.group(0)
    if "shared/reference" in name:
        return False
    here = Path(file).parent.as_posix()
    candidates = {os.path.normpath(name), os.path.normpath(os.path.join(here, name))}
    return any(Path(c).as_posix() in tracked for c in candidates)


def private_citations(tracked: list[str]) -> list[str]:
    """``file:line: text`` for every citation of the private notes in the scanned files."""
    known = set(tracked)
    hits = []
    for f in _scanned(tracked):
        text = _text(REPO / f)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), start=1):
            for m in PATTERN.finditer(line):
                if not _is_repo_link(line, m, f, known):
                    hits.append(f"{f}:{n}: {line.strip()[:160]}")
                    break
    return hits


def test_the_pattern_catches_the_citation_forms_and_spares_prose() -> None:
    caught = [
        "see ``../shared/reference/peers-and-rewards.md`` section 1.3",
        "(``rl-methods.md`` §8.2, pitfall 12)",
        "recipe (``method.md`` section 2.6)",
        "(see `environment.md`, section 4)",
        "rl-methods 2.1: per-step std",
        "style-guide.md §3",
    ]
    spared = [
        "the method's own loss",
        "the environment variable TDMBENCH_X",
        "docs/training.md, section Methods",
        "tdm-method.md",
        "a toy feasibility check",
    ]
    assert all(PATTERN.search(s) for s in caught)
    assert not any(PATTERN.search(s) for s in spared)


def test_a_path_to_a_tracked_file_is_not_a_private_citation() -> None:
    line = "see docs/method.md"
    m = PATTERN.search(line)
    assert m is not None
    assert _is_repo_link(line, m, "README.md", {"docs/method.md"})
    assert not _is_repo_link(line, m, "README.md", {"docs/training.md"})
    line = "``../shared/reference/method.md``"
    m = PATTERN.search(line)
    assert m is not None and not _is_repo_link(line, m, "tdm_r1/x.py", {"method.md"})


def test_no_shipped_text_cites_the_private_reference_notes() -> None:
    hits = private_citations(_tracked())
    assert not hits, (
        "citations of private notes (../shared/reference/*.md) that a user of the package does not "
        "have; cite the public source (paper arXiv id and section, repository@commit and file, or a "
        "docs/ page) instead:\n" + "\n".join(hits)
    )
