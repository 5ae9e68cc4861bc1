"""Strict dataclass configuration: defaults < YAML file < ``--set a.b=c`` < explicit CLI flags.

Configs are nested stdlib dataclasses. Unknown keys are errors with a did-you-mean suggestion
(a dead key that is silently accepted is the most common config bug in this field), values are
coerced to the declared field types, and ``__post_init__`` methods check invariants.

A dataclass may also hold *sections named at run time*: a plug-in (a training method registered
from outside the package) brings its own options dataclass, and the config that selects it gets a
section of that type without the config class naming it. Such a dataclass defines
``config_sections(data) -> {name: options dataclass}`` (a classmethod: the sections a config built
from the mapping ``data`` has) and stores them in ``self.sections`` (see :func:`sections_of`);
:func:`from_dict`, :func:`overlay` and :func:`to_dict` treat them like fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tdm_r1.errors import ConfigError, excerpt

C = TypeVar("C")

#: Most values a YAML document may expand to through its aliases. A real config has a few hundred;
#: 425 bytes of nested 8-way aliases expand to 16 million (an "alias bomb", quoted whole in an error).
MAX_YAML_VALUES = 100_000


class YamlExpansionError(yaml.YAMLError):
    """A YAML document whose aliases expand to more than :data:`MAX_YAML_VALUES` values."""


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Values ``node`` stands for with every alias written out (shared nodes counted each time)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:  # a recursive alias (``&a [*a]``) expands without end
        raise YamlExpansionError("a YAML alias refers to itself (an endless value)")
    active.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, memo, active) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in node.value)
    active.discard(key)
    memo[key] = total
    if total > MAX_YAML_VALUES:
        raise YamlExpansionError(
            f"its aliases (&name / *name) expand to more than {MAX_YAML_VALUES:,} values: write the "
            "values out instead of nesting aliases"
        )
    return total


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents whose alias expansion exceeds the bound."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, {}, set())
        return super().construct_document(node)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` bounded against alias bombs (:class:`YamlExpansionError`)."""
    return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=3e-4"`` -> ``("train.lr", 3e-4)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. train.lr=3e-4), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r} has an empty key")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except YamlExpansionError as exc:
        raise ConfigError(f"--set {key}: {exc}") from exc
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def load_yaml(path: str | Path) -> dict[str, Any]:
    from tdm_r1.errors import read_text, yaml_error_message

    path = Path(path)
    text = read_text(path, "config file")
    try:
        data = safe_load(text) or {}
    except YamlExpansionError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(exc, path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def extra_sections(cls: type, data: Mapping[str, Any]) -> dict[str, type]:
    """The run-time sections (name -> options dataclass) of a ``cls`` built from ``data`` (see the
    module docstring); none for a plain dataclass."""
    hook = getattr(cls, "config_sections", None)
    return dict(hook(data)) if callable(hook) else {}


def sections_of(cfg: Any) -> dict[str, Any]:
    """The run-time sections an instance holds (name -> options instance); empty for a plain one."""
    return dict(getattr(cfg, "sections", None) or {}) if hasattr(type(cfg), "config_sections") else {}


def overlay(cls: type, base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` on top of ``base``, two config trees of dataclass ``cls``: a nested dataclass
    section (``model:``, ``method:``) merges key by key; any other value, mappings such as
    ``rewards`` included, is replaced whole (a child preset's rewards are not added to its base's)."""
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    hints.update(extra_sections(cls, merge(dict(base), update)) if dataclasses.is_dataclass(cls) else {})
    out = dict(base)
    for key, value in update.items():
        tp = hints.get(key)
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overlay(tp, out[key], value)  # type: ignore[arg-type]
        else:
            out[key] = value
    return out


def load_config(
    cls: type[C],
    *,
    yaml_path: str | Path | None = None,
    data: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from layered sources; later layers win.

    Args:
        cls: the (nested) dataclass type.
        yaml_path: optional YAML file.
        data: optional mapping applied after the YAML file (e.g. a preset).
        overrides: ``key=value`` strings with dotted keys.
        flags: dotted key -> value from explicit CLI flags; ``None`` values mean "not given".
    """
    tree: dict[str, Any] = {}
    if yaml_path is not None:
        tree = merge(tree, load_yaml(yaml_path))
    if data:
        tree = merge(tree, data)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    return from_dict(cls, tree)


def from_dict(cls: type[C], data: Mapping[str, Any], *, path: str = "") -> C:
    """Strictly build dataclass ``cls`` from ``data`` (unknown keys raise)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    extra = extra_sections(cls, data)
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key in extra:
            sections[key] = _coerce(extra[key], value, where)
            continue
        if key not in fields:
            valid = sorted([*fields, *extra])
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {where!r}.{hint} Valid keys here: {', '.join(valid)}")
        kwargs[key] = _coerce(hints[key], value, where)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from exc
    if extra:
        obj.sections = {name: sections.get(name) or tp() for name, tp in extra.items()}  # type: ignore[attr-defined]
    return obj


def _quote(value: Any) -> str:
    """A value as quoted in an error: its repr, cut to a short excerpt."""
    return excerpt(value) if not isinstance(value, str) else repr(excerpt(value))


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: {_quote(value)} does not fit {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {_quote(value)} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value or {}, path=path)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            value = [value]
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_quote(value)}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{path}: expected true/false, got {_quote(value)}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{path}: expected an integer, got {_quote(value)}")
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: expected an integer, got {_quote(value)}") from exc
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {_quote(value)}")
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: expected a number, got {_quote(value)}") from exc
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{path}: expected a string, got {_quote(value)}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON/YAML-able dict (tuples become lists, paths strings)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            out = {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            return out | {name: conv(sec) for name, sec in sections_of(v).items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def dump_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
