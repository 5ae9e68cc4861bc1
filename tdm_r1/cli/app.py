"""The ``tdmbench`` typer app: its groups, global options, the options commands share, and the
one place that turns user errors into one-line messages (:func:`friendly_errors`).

Commands stay thin: parse, build a config, call a library function. Every heavy import happens
inside a command body, so ``tdmbench --help`` imports neither torch nor any reward backend.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from tdm_r1 import __version__

app = typer.Typer(
    name="tdmbench",
    help="Benchmark, evaluate and RL-train (TDM-R1) few-step text-to-image models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
data_app = typer.Typer(help="Official benchmark prompt files (downloaded by sha256).", no_args_is_help=True)
weights_app = typer.Typer(help="Model weights each reward and model needs.", no_args_is_help=True)
toy_app = typer.Typer(help="The embedded toy world: rebuild its models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(weights_app, name="weights")
app.add_typer(toy_app, name="toy")

F = TypeVar("F", bound=Callable[..., Any])

# Shared options, defined once.
RewardOpt = Annotated[
    list[str],
    typer.Option("--reward", "-r", help="Reward name, optionally weighted: ocr, ocr=0.7 (repeatable)."),
]
RewardOptionOpt = Annotated[
    list[str],
    typer.Option(
        "--reward-option",
        help="Reward constructor option REWARD.KEY=VALUE, e.g. pickscore.model_path=/models/PickScore_v1.",
    ),
]
SetOpt = Annotated[list[str], typer.Option("--set", help="Config override KEY=VALUE with dotted keys.")]


def _check_device(value: str | None) -> str | None:
    """``--device``: a torch device string whose accelerator exists (checked before any work)."""
    if value is None:
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise typer.BadParameter(f"{value!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise typer.BadParameter(f"{value!r}: no CUDA GPU is visible here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise typer.BadParameter(
                f"{value!r}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 ...)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise typer.BadParameter(f"{value!r}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise typer.BadParameter(f"{value!r}: tdmbench runs on cpu, cuda or mps")
    return value


DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="torch device (default: cuda if available).", callback=_check_device),
]

#: Set by ``tdmbench --debug``: user errors keep their traceback.
_DEBUG = {"on": False}


def debug_enabled() -> bool:
    """Whether ``--debug`` (or ``TDMBENCH_DEBUG``) asked for tracebacks instead of one-line errors."""
    return _DEBUG["on"]


def friendly_errors(fn: F) -> F:
    """Turn every error a user can cause into one line (exit code 2) instead of a traceback.

    What counts as user-caused is decided in one place, :func:`tdm_r1.errors.user_error_message`
    (tdmbench's own errors, bad files, paths, YAML, images); ``--debug`` re-raises them. Other
    exceptions are bugs and keep their traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from tdm_r1.errors import user_error_message

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            message = None if _DEBUG["on"] else user_error_message(exc)
            if message is None:
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from exc

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tdmbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of errors (also user errors).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Module or module:function that registers your own models, rewards, benchmarks or "
            "training methods, for every command (repeatable; also $TDMBENCH_PLUGINS).",
        ),
    ] = None,
) -> None:
    import os

    _DEBUG["on"] = debug or os.environ.get("TDMBENCH_DEBUG", "") not in ("", "0")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if plugin or os.environ.get("TDMBENCH_PLUGINS"):
        from tdm_r1.plugins import load_env_plugins

        friendly_errors(load_env_plugins)(plugin or [])


def parse_reward_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["pickscore.model_path=/x"]`` -> ``{"pickscore": {"model_path": "/x"}}``.

    Reward names may contain dots (``hpsv2.1``): the longest registered name that prefixes the
    key wins.
    """
    from tdm_r1.config import parse_override
    from tdm_r1.errors import ConfigError
    from tdm_r1.registry import REWARDS

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(
                f"--reward-option {item!r} must look like REWARD.KEY=VALUE "
                "(e.g. pickscore.model_path=/models/PickScore_v1)"
            )
        key, value = parse_override(item)
        parts = key.split(".")
        reward, opt = parts[0], ".".join(parts[1:])
        for cut in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:cut]) in REWARDS:
                reward, opt = ".".join(parts[:cut]), ".".join(parts[cut:])
                break
        if not opt:
            raise ConfigError(f"--reward-option {item!r} must look like REWARD.KEY=VALUE")
        out.setdefault(reward, {})[opt] = value
    return out
