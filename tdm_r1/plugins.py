"""``module:function`` references: prompt generators in benchmark YAML and ``--plugin`` hooks.

A plugin is a module (imported for its registration decorators) or ``module:function`` (the
function is called with no arguments and registers models, rewards, benchmarks or training
methods). This is how a user's own model preset reaches ``tdmbench eval`` and a user's own RL
method reaches ``tdmbench train`` and ``tdmbench arena``.

``tdmbench --plugin MODULE <command>`` loads a plugin for any command and records it in
``$TDMBENCH_PLUGINS`` (comma-separated), which every process tdmbench starts (the workers of a
multi-process run, the arena's cells) inherits and loads in turn (:func:`load_env_plugins`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from tdm_r1.errors import ConfigError

log = logging.getLogger(__name__)

#: Plugins every tdmbench process loads (comma-separated ``module`` / ``module:function``).
ENV = "TDMBENCH_PLUGINS"


def resolve_callable(ref: str) -> Callable[..., Any]:
    """``"pkg.mod:func"`` -> the function; errors say what part is wrong."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{ref!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} (from {ref!r}): {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r} (from {ref!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{ref!r} is not callable")
    return obj


def load_plugins(refs: Iterable[str]) -> None:
    """Import each ``module`` or call each ``module:function`` (see module docstring).

    Modules are looked up on ``sys.path`` and in the current directory (as ``python -m`` does;
    the ``tdmbench`` entry point alone would not look there).
    """
    refs = [r for r in refs if r.strip()]
    if refs and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for ref in refs:
        ref = ref.strip()
        if not ref:
            continue
        if ":" in ref:
            log.debug("calling plugin %s", ref)
            resolve_callable(ref)()
        else:
            try:
                importlib.import_module(ref)
            except ImportError as exc:
                raise ConfigError(f"cannot import plugin module {ref!r}: {exc}") from exc


def env_plugins() -> list[str]:
    """The plugins named in ``$TDMBENCH_PLUGINS``."""
    return [r.strip() for r in os.environ.get(ENV, "").split(",") if r.strip()]


def load_env_plugins(extra: Iterable[str] = ()) -> list[str]:
    """Load ``$TDMBENCH_PLUGINS`` and ``extra``, and record them all in ``$TDMBENCH_PLUGINS`` so that
    child processes load the same ones. Returns the list."""
    refs = list(dict.fromkeys([*env_plugins(), *(r.strip() for r in extra if r.strip())]))
    if refs:
        os.environ[ENV] = ",".join(refs)
        load_plugins(refs)
    return refs
