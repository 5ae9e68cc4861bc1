"""One generic registry, instantiated once per kind: rewards, models, benchmarks.

Entries register through decorators (``@register_reward("ocr")``) in the modules that define
them. A registry knows which module defines its built-ins and imports it on first lookup, so
``import tdm_r1`` and ``tdmbench --help`` never import torch or a reward backend.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tdm_r1.errors import ConfigError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    aliases: tuple[str, ...] = ()
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> object map with aliases, did-you-mean errors and lazy built-in loading.

    Args:
        kind: what the entries are ("reward", "model", ...), used in messages.
        builtins: modules imported on first lookup; they register the built-in entries.
    """

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtins = builtins
        self._loaded = not builtins
        self._entries: dict[str, Entry[T]] = {}
        self._alias: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------
    def register(
        self, name: str, *, aliases: tuple[str, ...] | list[str] = (), **meta: Any
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (lowercase, kebab-case) and aliases."""

        def deco(obj: T) -> T:
            self.add(name, obj, aliases=tuple(aliases), **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = (), **meta: Any) -> None:
        for key in (name, *aliases):
            if key != key.lower() or " " in key:
                raise ConfigError(f"{self.kind} name {key!r} must be lowercase without spaces")
            if key in self._alias and self._alias[key] != name:
                raise ConfigError(
                    f"{self.kind} name {key!r} is already registered by {self._entries[self._alias[key]].origin}"
                )
        origin = _origin(obj)
        self._entries[name] = Entry(
            name=name, obj=obj, aliases=tuple(aliases), origin=origin, meta=dict(meta)
        )
        for key in (name, *aliases):
            self._alias[key] = name

    # -- lookup -------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins:
            importlib.import_module(module)

    def canonical(self, name: str) -> str:
        self._ensure_loaded()
        key = name.strip().lower()
        if key in self._alias:
            return self._alias[key]
        raise UnknownNameError(self._unknown_message(name))

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)].obj

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        self._ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and name.strip().lower() in self._alias

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _unknown_message(self, name: str) -> str:
        names = sorted(self._alias)
        close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"Unknown {self.kind} {name!r}.{hint} Available {self.kind}s: {', '.join(self.names())}. "
            f"(`tdmbench ls {self.kind}s` describes them.)"
        )


def _origin(obj: Any) -> str:
    try:
        target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
        file = inspect.getsourcefile(target) or "?"
        line = inspect.getsourcelines(target)[1]
        return f"{file}:{line}"
    except (TypeError, OSError):
        return "?"


#: Reward classes (``tdm_r1.rewards``), keyed by reward name.
REWARDS: Registry[Any] = Registry("reward", builtins=("tdm_r1.rewards",))
#: Model presets (``tdm_r1.models.presets``), keyed by preset name.
MODELS: Registry[Any] = Registry("model", builtins=("tdm_r1.models.presets",))
#: Benchmark suites (``tdm_r1.benchmarks``), keyed by benchmark name.
BENCHMARKS: Registry[Any] = Registry("benchmark", builtins=("tdm_r1.benchmarks",))


def register_reward(name: str, *, aliases: tuple[str, ...] | list[str] = (), **meta: Any):
    return REWARDS.register(name, aliases=aliases, **meta)


def register_model(name: str, *, aliases: tuple[str, ...] | list[str] = (), **meta: Any):
    return MODELS.register(name, aliases=aliases, **meta)


def register_benchmark(name: str, *, aliases: tuple[str, ...] | list[str] = (), **meta: Any):
    return BENCHMARKS.register(name, aliases=aliases, **meta)


#: Training methods (``tdm_r1.train.methods``), keyed by method name.
METHODS: Registry[Any] = Registry("method", builtins=("tdm_r1.train.methods.tdm_r1",))
