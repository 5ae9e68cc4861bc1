from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from tdm_r1.eval.results import run_files
from tdm_r1.eval.runner import evaluate
from tdm_r1.testing.evalkit import Kit, kit_fixture  # noqa: F401 (fixture)

TESTS = Path(__file__).resolve().parent


def test_two_cpu_processes_give_the_same_results_as_one(kit: Kit, tmp_path: Path) -> None:
    """`tdmbench eval --num-processes 2`: every item generated exactly once, identical files."""
    log = tmp_path / "generated.txt"
    env = dict(os.environ)
    env.update(
        TDMBENCH_RESULTS=str(tmp_path / "two" / "results"),
        TDMBENCH_CACHE=str(tmp_path / "two" / "cache"),
        EVALKIT_LOG=str(log),
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
    )
    cmd = [sys.executable, "-m", "tdm_r1.cli", "-q", "eval", "--model", "kit-r1", "--num-processes", "2"]
    cmd += [
        "--plugin",
        "tdm_r1.testing.evalkit:register",
        "--batch-size",
        "3",
        "--no-progress",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    generated = Counter(log.read_text().splitlines())
    assert len(generated) == 12 * 2 + 10 and set(generated.values()) == {1}  # no padding, no duplicates

    evaluate("kit-r1", batch_size=8, progress=False)  # one process, default folders of the fixture
    for bench in ("kit-geneval", "kit-bright"):
        two = run_files(bench, "kit-r1", tmp_path / "two" / "results")
        one = run_files(bench, "kit-r1", kit.results)
        assert two.csv.read_bytes() == one.csv.read_bytes()
        assert two.meta.read_bytes() == one.meta.read_bytes()
        pd.testing.assert_frame_equal(pd.read_parquet(two.samples), pd.read_parquet(one.samples))
