"""One generic registry, instantiated once per kind: rewards, models, benchmarks, detector backends.

Entries register either as objects, through decorators (``@register_reward("ocr")``) in the
modules that define them, or as lazy ``"package.module:Attribute"`` targets that are imported on
the first :meth:`Registry.get` (so a registry can name optional backends without importing them).
A registry also knows which modules define its built-ins and imports them on first lookup, so
``import tdm_r1`` and ``tdmbench --help`` never import torch or a reward backend.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tdm_r1.errors import ConfigError, TdmError, UnknownNameError

T = TypeVar("T")

#: ``Entry.obj`` of a lazy entry whose target is not imported yet.
NOT_LOADED: Any = type("NotLoaded", (), {"__repr__": lambda self: "<not loaded>"})()


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name. A lazy entry has ``target`` set and ``obj`` :data:`NOT_LOADED`
    until the first :meth:`Registry.get` (or :meth:`Registry.entry`) imports it."""

    name: str
    obj: T
    aliases: tuple[str, ...] = ()
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    target: str = ""

    @property
    def loaded(self) -> bool:
        return self.obj is not NOT_LOADED


class Registry(Generic[T]):
    """Name -> object map with aliases, did-you-mean errors and lazy loading.

    Args:
        kind: what the entries are ("reward", "model", ...), used in messages.
        builtins: modules imported on first lookup; they register the built-in entries.
        targets: lazy entries, name -> ``"package.module:Attribute"`` (see :meth:`add_lazy`).
        hint: the last sentence of the unknown-name error (default: the ``tdmbench ls`` command).
    """

    def __init__(
        self,
        kind: str,
        builtins: tuple[str, ...] = (),
        *,
        targets: Mapping[str, str] | None = None,
        hint: str | None = None,
    ) -> None:
        self.kind = kind
        self.hint = f"(`tdmbench ls {kind}s` describes them.)" if hint is None else hint
        self._builtins = builtins
        self._loaded = not builtins
        self._entries: dict[str, Entry[T]] = {}
        self._alias: dict[str, str] = {}
        for name, target in (targets or {}).items():
            self.add_lazy(name, target)

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
        self._put(Entry(name=name, obj=obj, aliases=tuple(aliases), origin=_origin(obj), meta=dict(meta)))

    def add_lazy(self, name: str, target: str, *, aliases: tuple[str, ...] = (), **meta: Any) -> None:
        """Register ``target`` (``"package.module:Attribute"``), imported on the first :meth:`get`."""
        _split_target(target)
        self._put(
            Entry(
                name=name,
                obj=NOT_LOADED,
                aliases=tuple(aliases),
                origin=target,
                meta=dict(meta),
                target=target,
            )
        )

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases (e.g. what a test registered); unknown names are ignored."""
        canonical = self._alias.get(name.strip().lower())
        if canonical is None:
            return
        entry = self._entries.pop(canonical)
        for key in (entry.name, *entry.aliases):
            self._alias.pop(key, None)

    def _put(self, entry: Entry[T]) -> None:
        for key in (entry.name, *entry.aliases):
            if key != key.lower() or " " in key:
                raise ConfigError(f"{self.kind} name {key!r} must be lowercase without spaces")
            if key in self._alias and self._alias[key] != entry.name:
                raise ConfigError(
                    f"{self.kind} name {key!r} is already registered by {self._entries[self._alias[key]].origin}"
                )
        self._entries[entry.name] = entry
        for key in (entry.name, *entry.aliases):
            self._alias[key] = entry.name

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
        return self.entry(name).obj

    __getitem__ = get  # ``registry[name]``: the same lookup, the same unknown-name message

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``; a lazy one is imported now (errors name the target)."""
        return self._resolve(self.canonical(name))

    def _resolve(self, canonical: str) -> Entry[T]:
        entry = self._entries[canonical]
        if entry.loaded:
            return entry
        obj = load_target(entry.target, what=f"{self.kind} {entry.name!r}")
        entry = dataclasses.replace(entry, obj=obj, origin=_origin(obj))
        self._entries[canonical] = entry
        return entry

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata of ``name``'s entry, without importing a lazy target."""
        return self._entries[self.canonical(name)].meta

    def names(self) -> list[str]:
        """Every registered name, sorted; imports no lazy target."""
        self._ensure_loaded()
        return sorted(self._entries)

    def names_in_order(self) -> list[str]:
        """Every registered name in registration order (built-ins first); imports no lazy target."""
        self._ensure_loaded()
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Every entry, sorted by name, lazy targets imported."""
        return [self._resolve(n) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and name.strip().lower() in self._alias

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _unknown_message(self, name: str) -> str:
        names = sorted(self._alias)
        close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Available {self.kind}s: {', '.join(self.names())}." + (
            f" {self.hint}" if self.hint else ""
        )


def _split_target(target: str) -> tuple[str, str]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{target!r} must look like 'package.module:Attribute'")
    return module_name, attr


def load_target(target: str, what: str = "") -> Any:
    """Import ``"package.module:Attribute"`` (the attribute may be dotted) and return it.

    A module that is not part of this installation, or an attribute it lacks, raises
    :class:`TdmError` naming ``what`` and the target; an import error *inside* the module (e.g. a
    missing optional dependency with its own install hint) propagates unchanged.
    """
    module_name, attr = _split_target(target)
    what = what or target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise TdmError(
                f"{what} lives in {module_name}, which is not part of this installation ({exc})"
            ) from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TdmError(f"{what}: module {module_name} has no attribute {attr!r} (target {target!r})")
        obj = getattr(obj, part)
    return obj


def lazy_attributes(module: str, targets: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) serving ``targets`` (attribute -> ``"module:Attribute"``).

    Names are exact Python attributes (not registry names: no lowercasing), and an unknown one
    raises :class:`AttributeError`, as ``hasattr`` and ``from module import *`` expect.
    """

    def __getattr__(name: str) -> Any:
        if name not in targets:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return load_target(targets[name], what=f"{module}.{name}")

    return __getattr__


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


#: Training methods, keyed by method name. The built-ins are the catalogue in
#: ``tdm_r1/train/methods/__init__.py`` (lazy: listing them imports no torch); a plug-in registers
#: with :func:`register_method`.
METHODS: Registry[Any] = Registry("method", builtins=("tdm_r1.train.methods",))


def register_method(
    name: str,
    *,
    options: type | str | None = None,
    section: str | None = None,
    toy_recipes: Mapping[str, str] | None = None,
    without_reward: str | None = None,
    aliases: tuple[str, ...] | list[str] = (),
    **meta: Any,
):
    """Decorator registering a training method (a :class:`~tdm_r1.train.methods.base.TrainingMethod`
    subclass) with what the config layer, the CLI and the arena read without importing it:

    Args:
        options: the dataclass of the method's options (or ``"module:Class"``): the config gets the
            section ``method.<section>`` of this type when it selects the method.
        section: that section's name (e.g. ``"flow_grpo"``); required with ``options``.
        toy_recipes: start model -> training recipe of the toy world, ``{reward}`` filled in (a
            shipped recipe name or a YAML path): ``tdmbench train`` picks it when no ``--config``
            is given, and the arena trains these cells.
        without_reward: the method a config without rewards trains instead (TDM-R1 -> distill).

    Whether the method takes a reward (``reward`` in the entry) is the class's ``uses_reward``.
    """
    if (options is None) != (section is None):
        raise ConfigError(f"method {name!r}: give options= and section= together")

    def deco(cls: Any) -> Any:
        METHODS.add(
            name,
            cls,
            aliases=tuple(aliases),
            options=options,
            section=section,
            toy_recipes=dict(toy_recipes or {}),
            without_reward=without_reward,
            reward=bool(getattr(cls, "uses_reward", True)),
            **meta,
        )
        return cls

    return deco
