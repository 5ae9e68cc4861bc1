"""Every function, class and method that README.md or docs/ name has a docstring ``help()`` shows.

A name counts as "named" when it appears in backticks in the docs (``register_method``,
``score(images, prompts, metadata)``, ``cfg.method_name``: the last dotted part) and a public
top-level function or class of the product, or a public method of such a class, has that name.
``inspect.getdoc`` is the test, as ``help()`` uses it: an override inherits its base's docstring.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _named_in_docs() -> set[str]:
    names: set[str] = set()
    for doc in DOCS:
        for token in re.findall(r"`([A-Za-z_][\w.]*)(?:\([^`]*\))?`", doc.read_text(encoding="utf-8")):
            names.add(token.split(".")[-1])
    return names


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "rewards":
        parts = ["tdm_r1", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _documented_api() -> list[tuple[str, str, str | None]]:
    named = _named_in_docs()
    out = []
    for path in [*(REPO / "tdm_r1").rglob("*.py"), *(REPO / "rewards").rglob("*.py")]:
        if "testing" in path.parts:
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.name.startswith("_"):
                continue
            if node.name in named:
                out.append((_module(path), node.name, None))
            if isinstance(node, ast.ClassDef):
                out += [
                    (_module(path), node.name, sub.name)
                    for sub in node.body
                    if isinstance(sub, ast.FunctionDef) and not sub.name.startswith("_") and sub.name in named
                ]
    return out


def test_what_the_docs_name_has_a_docstring() -> None:
    api = _documented_api()
    assert len(api) > 100  # the docs name the API (register_method, Reward.score, TrainingMethod, ...)
    missing = []
    for module, name, method in api:
        obj = getattr(importlib.import_module(module), name)
        if method is not None:
            obj = getattr(obj, method)
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(f"{module}.{name}" + (f".{method}" if method else ""))
    assert not missing, "named in README.md / docs/ but without a docstring:\n" + "\n".join(missing)
