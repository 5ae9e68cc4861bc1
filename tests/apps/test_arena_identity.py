"""Committed arena rows carry the identity of what produced them: today's code gives each version-2
row's cell the same config hash, or the row must be re-run (the arena would redo it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tdm_r1.apps.arena.grid import ARENA_VERSION, Cell, cell_config, cell_hash
from tdm_r1.apps.arena.run import suite_versions
from tdm_r1.eval.arena_table import read_tables

RESULTS = Path(__file__).resolve().parents[2] / "results"


def _rows() -> list[pd.Series]:
    rows = []
    for table in read_tables(RESULTS).values():
        rows += [r for _, r in table.iterrows() if str(r["arena_version"]) == ARENA_VERSION]
    return rows


@pytest.mark.skipif(not _rows(), reason="no version-2 arena rows committed yet")
def test_every_committed_v2_arena_row_has_todays_config_hash(tmp_path: Path) -> None:
    stale = []
    for r in _rows():
        cell = Cell(str(r["method"]), str(r["model"]), str(r["reward"]), int(r["seed"]))
        digest = cell_hash(cell_config(cell, int(r["budget"]), tmp_path), suite_versions(cell.reward))
        if digest != str(r["config_hash"]):
            stale.append(
                f"{cell.reward}: {cell.label} seed {cell.seed}: {r['config_hash']} != today's {digest}"
            )
    assert not stale, "re-run these arena cells (tdmbench arena redoes them):\n" + "\n".join(
        sorted(set(stale))
    )
