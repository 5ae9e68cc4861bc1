"""Relaunching a command in N processes: the parsed options back into argv, from the command itself.

``tdmbench eval --num-processes N`` starts N copies of itself. Their argv is rebuilt from the
command's own parameter declarations and what the user gave (:func:`context_argv`), never from
a hand-written list, so an option added to a command reaches its child processes without a line
here. Training relaunches from the run's resolved ``config.yaml`` instead (``training.py``).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum
from typing import Any

import typer

#: Parameter sources that mean "not given by the user" (click's ``ParameterSource`` names).
_NOT_GIVEN = {"DEFAULT", "DEFAULT_MAP"}


def context_argv(ctx: typer.Context, *, drop: Collection[str] = ()) -> list[str]:
    """The argv (without the program name) that gives the command of ``ctx`` and its parent
    groups every parameter the user set, by command line or environment; parameters left at
    their defaults are left out (the child takes the same defaults), and so are those in
    ``drop`` (parameter names, e.g. ``num_processes``)."""
    chain: list[typer.Context] = []
    node: typer.Context | None = ctx
    while node is not None:
        chain.append(node)
        node = node.parent
    argv: list[str] = []
    for depth, node in enumerate(reversed(chain)):
        if depth:  # the root is the program itself
            argv.append(str(node.info_name))
        argv += _given(node, drop)
    return argv


def global_argv(ctx: typer.Context) -> list[str]:
    """The root group's options the user set (``-v``, ``-q``, ``--debug``), for a child's argv."""
    return _given(ctx.find_root(), ())


def _given(ctx: typer.Context, drop: Collection[str]) -> list[str]:
    options: list[str] = []
    positional: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in drop or name not in ctx.params:
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name in _NOT_GIVEN:
            continue
        value = ctx.params[name]
        if param.param_type_name == "argument":
            positional += [_text(v) for v in (value if param.multiple or param.nargs != 1 else [value])]
            continue
        flag = max(param.opts, key=len)  # the long form: --model, not -m
        if param.is_flag:
            if param.secondary_opts:  # --progress/--no-progress
                options.append(flag if value else max(param.secondary_opts, key=len))
            elif value:
                options.append(flag)
            continue
        for item in value if param.multiple else [value]:
            if isinstance(item, tuple):  # an option of nargs > 1
                options += [flag, *map(_text, item)]
            elif item is not None:
                options += [flag, _text(item)]
    return options + positional


def _text(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)
