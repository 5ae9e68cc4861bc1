"""The ``tdmbench`` command line (typer).

Commands stay thin: parse, build a config, call a library function. Every heavy import happens
inside a command body, so ``tdmbench --help`` imports neither torch nor any reward backend.

``app`` holds the shared options and error handling; the commands live by subject in
``catalog`` (ls, data, weights), ``images`` (score, generate), ``evaluation`` (eval,
leaderboard, report), ``training`` (train, distill, demo, toy build), ``export`` (LoRA files for other
tools), ``label`` and ``arena``. ``relaunch``
turns a command's parsed options back into the argv of its child processes.
"""

from __future__ import annotations

# isort: off
# Importing a module registers its commands; this order is the order of `tdmbench --help`.
from tdm_r1.cli import catalog, images, evaluation, training, export, arena, planning  # noqa: F401
from tdm_r1.cli.app import app, friendly_errors, parse_reward_options

# isort: on

__all__ = ["app", "friendly_errors", "parse_reward_options"]
