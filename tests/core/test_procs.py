"""Item: OCR worker processes die with their parent (issue 12.2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = """
import sys, time
import numpy as np
from tdm_r1.rewards.ocr import OcrReward

if __name__ == "__main__":
    reward = OcrReward(workers=2)
    images = [np.full((32, 96, 3), 255, dtype=np.uint8) for _ in range(4)]
    reward.read_all(images)  # starts the pool
    print(" ".join(str(pid) for pid in reward._pool._processes), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "Z" not in state.split()[1]  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ocr_workers_die_when_the_main_process_is_killed(tmp_path: Path) -> None:
    pytest.importorskip("rapidocr")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        workers = [int(p) for p in line.split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "OCR workers outlived the killed main process"
    finally:
        if proc.poll() is None:
            proc.kill()
