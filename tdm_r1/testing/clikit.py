"""Helpers for CLI tests (imported by test modules; not a fixture file)."""

from __future__ import annotations


def one_line_error(result, *needles: str) -> str:
    """The command failed with exit code 2 and one ``error:`` line that contains every needle
    (no traceback); returns that line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
