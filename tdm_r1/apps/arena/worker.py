"""One arena cell in its own process: train (or resume) the run, then evaluate its budget checkpoints.

Both sides of that process live here: :class:`CellProcess` starts and watches it (the arena's
side), :func:`main` is what runs in it.

``python -m tdm_r1.apps.arena.worker --config <run>/config.yaml --name <epoch>=<model name> ...
--suite <suite> ... --results <dir>``. Training is :class:`~tdm_r1.train.trainer.Trainer`'s
``fit`` (which resumes from the run's checkpoints); each checkpoint export
(``<run>/exports/epoch-<N>``, and ``<run>/final`` for the last epoch) is evaluated under its own
model name with the cached eval runner, so a rerun of a finished cell evaluates nothing.

Why a process per cell: its peak memory is its own, a crash is the cell's and the grid goes on,
and ``tdmbench arena --jobs N`` runs N cells at once (each with its share of the cores). Errors
print one ``error: <message>`` line (the arena keeps it in the cell's row) and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tdm_r1.apps.arena.grid import SUITES, Cell, checkpoint_epochs

#: Bytes of a failed child's stderr kept to find its error line.
_TAIL = 8192


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("error:"):
            return ln[len("error:") :].strip()
    return lines[-1] if lines else "no output"


def checkpoints(cell: Cell, cfg: Any) -> dict[int, str]:
    """epoch -> the model name its export is evaluated under (a quarter, half and all the budget)."""
    return {e: cell.checkpoint_name(e * cfg.samples_per_epoch) for e in checkpoint_epochs(cfg.max_epochs)}


class CellProcess:
    """One cell's worker process (:mod:`tdm_r1.apps.arena.worker`): started, polled, its error line kept."""

    def __init__(
        self,
        cell: Cell,
        cfg: Any,
        results: Path,
        *,
        threads: int,
        batch_size: int,
        debug: bool,
        echo_child: bool,
    ) -> None:
        from tdm_r1.train.resume import write_run_config

        self.cell, self.cfg = cell, cfg
        self.digest = ""
        config = write_run_config(cfg)
        argv = [sys.executable, "-m", "tdm_r1.apps.arena.worker", "--config", str(config)]
        argv += [a for e, n in checkpoints(cell, cfg).items() for a in ("--name", f"{e}={n}")]
        argv += [a for suite, _ in SUITES[cell.reward] for a in ("--suite", suite)]
        argv += [
            "--results",
            str(results),
            "--batch-size",
            str(batch_size),
            *(["--debug"] if debug else []),
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.log_path = cfg.run_dir() / "arena-worker.log"
        self._log = None if echo_child else self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE if echo_child else self._log, env=env)
        self.echo_child = echo_child

    def wait(self) -> None:
        """Block until the worker ends (passing its progress through); raise with its error line."""
        tail = b""
        if self.echo_child:
            assert self.proc.stderr is not None
            while chunk := self.proc.stderr.read1(4096):
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
                tail = (tail + chunk)[-_TAIL:]
        self.proc.wait()
        self._raise_if_failed(tail)

    def poll(self) -> bool:
        """Whether the worker has ended (raise with its error line if it failed)."""
        if self.proc.poll() is None:
            return False
        self._raise_if_failed(b"")
        return True

    def _raise_if_failed(self, tail: bytes) -> None:
        if self._log is not None:
            self._log.close()
            tail = self.log_path.read_bytes()[-_TAIL:]
        if self.proc.returncode != 0:
            raise RuntimeError(
                f"training failed (exit {self.proc.returncode}): {_error_line(tail.decode(errors='replace'))}"
            )


def checkpoint_folder(run_dir: Path, epoch: int, last_epoch: int) -> Path:
    """Where the EMA generator of ``epoch`` was exported."""
    return run_dir / "final" if epoch == last_epoch else run_dir / "exports" / f"epoch-{epoch}"


def run(config: Path, names: dict[int, str], suites: list[str], results: Path, batch_size: int) -> None:
    """Train one cell from its resolved ``config`` (resuming), then evaluate each exported
    checkpoint (epoch -> model name in ``names``) on ``suites`` into ``results``."""
    from tdm_r1.eval.runner import evaluate
    from tdm_r1.models.preset import load_preset_file
    from tdm_r1.train.config import load_train_config
    from tdm_r1.train.trainer import Trainer

    cfg = load_train_config(config)
    run_dir = Trainer(cfg).fit()
    for epoch, name in sorted(names.items()):
        folder = checkpoint_folder(run_dir, epoch, cfg.max_epochs)
        preset = dataclasses.replace(load_preset_file(folder / "preset.json"), name=name)
        evaluate(preset, suites, batch_size=batch_size, results_root=results, progress=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--name", action="append", default=[], help="<epoch>=<model name> to evaluate")
    ap.add_argument("--suite", action="append", default=[])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    names = {int(e): n for e, n in (item.split("=", 1) for item in args.name)}
    try:
        from tdm_r1.plugins import load_env_plugins

        load_env_plugins()  # a plug-in method's cell: the parent's --plugin, through the environment
        run(args.config, names, args.suite, args.results, args.batch_size)
    except Exception as exc:
        if args.debug:
            raise
        from tdm_r1.errors import user_error_message

        print(f"error: {user_error_message(exc) or f'{type(exc).__name__}: {exc}'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
