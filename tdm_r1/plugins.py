"""``module:function`` references: prompt generators in benchmark YAML and ``--plugin`` hooks.

A plugin is a module (imported for its registration decorators; a dotted name on ``sys.path`` or a
``.py`` file) or ``module:function`` (the
function is called with no arguments and registers models, rewards, benchmarks or training
methods). This is how a user's own model preset reaches ``tdmbench eval`` and a user's own RL
method reaches ``tdmbench train`` and ``tdmbench arena``.

``tdmbench --plugin MODULE <command>`` loads a plugin for any command and records it in
``$TDMBENCH_PLUGINS`` (comma-separated), which every process tdmbench starts (the workers of a
multi-process run, the arena's cells) inherits and loads in turn (:func:`load_env_plugins`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
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
    """Import each ``module`` / ``file.py`` or call each ``module:function`` / ``file.py:function``
    (see module docstring).

    Modules are looked up on ``sys.path`` and in the current directory (as ``python -m`` does;
    the ``tdmbench`` entry point alone would not look there). A file is imported under its stem,
    with its folder put on ``sys.path`` (so it can import its neighbours).
    """
    refs = [r for r in refs if r.strip()]
    if refs and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for ref in refs:
        ref = ref.strip()
        target, sep, func = ref.rpartition(":") if ":" in ref else (ref, "", "")
        if target.endswith(".py"):
            module = _import_file(Path(target))
            if sep:
                fn = getattr(module, func, None)
                if not callable(fn):
                    raise ConfigError(f"plugin file {target} has no function {func!r} (from {ref!r})")
                fn()
        elif sep:
            log.debug("calling plugin %s", ref)
            resolve_callable(ref)()
        else:
            try:
                importlib.import_module(ref)
            except ImportError as exc:
                raise ConfigError(f"cannot import plugin module {ref!r}: {exc}") from exc


def _import_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"plugin file {path} does not exist: give a .py file or a module on sys.path")
    loaded = sys.modules.get(path.stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin file {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        sys.modules.pop(path.stem, None)
        raise ConfigError(f"plugin file {path}: {exc}") from exc
    return module


def _absolute(ref: str) -> str:
    """A file plugin with its absolute path (child processes may run elsewhere); others unchanged."""
    target, sep, func = ref.rpartition(":") if ":" in ref else (ref, "", "")
    return f"{Path(target).expanduser().resolve()}{sep}{func}" if target.endswith(".py") else ref


def env_plugins() -> list[str]:
    """The plugins named in ``$TDMBENCH_PLUGINS``."""
    return [r.strip() for r in os.environ.get(ENV, "").split(",") if r.strip()]


def load_env_plugins(extra: Iterable[str] = ()) -> list[str]:
    """Load ``$TDMBENCH_PLUGINS`` and ``extra``, and record them all in ``$TDMBENCH_PLUGINS`` so that
    child processes load the same ones. Returns the list."""
    refs = list(dict.fromkeys([*env_plugins(), *(_absolute(r.strip()) for r in extra if r.strip())]))
    if refs:
        os.environ[ENV] = ",".join(refs)
        load_plugins(refs)
    return refs
