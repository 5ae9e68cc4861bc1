"""``tdmbench eval|train|distill --num-processes N``: start N processes of a command on this machine.

The caller gives the child argv from one source (``tdm_r1.cli.relaunch``: the command's own
parsed options for ``eval``; ``train --config <run>/config.yaml`` for training). The processes are
started with ``torch.distributed.run`` (what ``accelerate launch`` uses for
multi-process runs); inside each, accelerate's ``PartialState`` reads the rank and world size and
opens the process group (gloo on CPU, NCCL on GPUs). ``accelerate launch -m tdm_r1.cli eval ...``
works the same way for users who prefer accelerate's own configuration.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from tdm_r1.errors import ConfigError, TdmError

log = logging.getLogger(__name__)


def in_distributed_launch() -> bool:
    """True inside a process started by torchrun / accelerate launch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ


def launch(
    num_processes: int, cli_args: list[str], *, what: str = "evaluation", resume_hint: str | None = None
) -> None:
    """Run ``tdmbench <cli_args>`` in ``num_processes`` processes and wait for them.

    Raises :class:`TdmError` when any process fails (its output is already on the terminal).
    """
    if num_processes < 2:
        raise ConfigError(f"launch needs at least 2 processes, got {num_processes}")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={num_processes}",
        "--module",
        "tdm_r1.cli",
        *cli_args,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes share the cores
    log.info("launching %d processes: %s", num_processes, " ".join(cmd))
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        hint = (
            "Finished images and scores are cached: rerun the same command to resume."
            if resume_hint is None
            else resume_hint
        )
        raise TdmError(
            f"the {num_processes}-process {what} failed (exit code {proc.returncode}); see the messages above. {hint}".rstrip()
        )
