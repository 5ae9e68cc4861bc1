"""``module:function`` references: prompt generators in benchmark YAML and ``--plugin`` hooks.

A plugin is a module (imported for its registration decorators) or ``module:function`` (the
function is called with no arguments and registers models, rewards or benchmarks). This is how a
user's own model preset reaches ``tdmbench eval``, including in every process of a multi-process
run (the launcher passes the same ``--plugin`` flags on).
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
