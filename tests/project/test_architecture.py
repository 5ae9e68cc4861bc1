"""The layering of docs/architecture.md, checked on the source: a module imports only its layer and below.

Every ``import tdm_r1.X`` / ``from tdm_r1.X import`` in the product (function-level imports too) is
mapped to a layer; an import of a higher layer fails with the file, line and rule. Keeping this
true keeps the model layer usable without the trainer, the trainer without the CLI, and the
pure math without torch models.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# (folder, layer): the folders show the layers. The top-level modules of tdm_r1 are the foundation;
# every other module's layer is that of its first folder. Keep in step with docs/architecture.md.
LAYERS: list[tuple[str, int]] = [
    # 0 foundation (the top-level modules): errors, config, registry, seeds, the flow math, ...
    ("tdm_r1", 0),
    # 1 the pure method math (losses, noise, advantages): flow math only
    ("tdm_r1.losses", 1),
    # 2 models and the sampler; the toy world (grammar, held-out split, toy model components)
    ("tdm_r1.models", 2),
    ("tdm_r1.toyworld", 2),
    # 3 rewards and what they stand on (OCR engines, the label store a likes reward reads)
    ("tdm_r1.rewards", 3),
    ("tdm_r1.label", 3),
    # 4 evaluation: benchmarks, runner, cache, statistics, leaderboards, reports
    ("tdm_r1.benchmarks", 4),
    ("tdm_r1.eval", 4),
    # 5 training: the loop, its methods, checkpoints (may run a scheduled evaluation); the planner
    ("tdm_r1.train", 5),
    ("tdm_r1.planning", 5),
    # 6 applications: the commands and what they run (demo, listings, generation, arena, toy build)
    ("tdm_r1.cli", 6),
    ("tdm_r1.apps", 6),
    # test and perf scaffolding: imports anything, imported by nothing in the product
    ("tdm_r1.testing", 99),
]
#: The pure math stays importable without torch models: it may import only these.
PURE = {"tdm_r1.losses": ("tdm_r1.flow", "tdm_r1.losses", "tdm_r1.errors")}


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("rewards", "benchmarks"):  # installed as tdm_r1.rewards / tdm_r1.benchmarks
        parts = ["tdm_r1", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("tdm_r1")]
        elif (
            isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tdm_r1")
        ):
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _product_files() -> list[Path]:
    files = [p for d in ("tdm_r1", "rewards", "benchmarks") for p in (REPO / d).rglob("*.py")]
    return [p for p in files if "perf" not in p.parts]


def test_no_module_imports_a_higher_layer() -> None:
    bad = []
    for path in _product_files():
        mod = _module_name(path)
        for line, target in _imports(path):
            # `from tdm_r1.x import y`: y may be a module (tdm_r1.x.y) or a name in tdm_r1.x
            if layer(target) > layer(mod) and layer(target.rsplit(".", 1)[0]) > layer(mod):
                bad.append(f"{path.relative_to(REPO)}:{line}: {mod} (layer {layer(mod)}) imports {target}")
            for pure, allowed in PURE.items():
                if mod.startswith(pure) and not target.startswith(allowed):
                    bad.append(f"{path.relative_to(REPO)}:{line}: pure {mod} imports {target}")
    assert not bad, "layering broken (docs/architecture.md):\n" + "\n".join(bad)


def test_nothing_in_the_product_imports_the_test_scaffolding() -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line}: {target}"
        for path in _product_files()
        if not _module_name(path).startswith("tdm_r1.testing")
        for line, target in _imports(path)
        if target.startswith("tdm_r1.testing")
    ]
    assert not bad, bad


def test_the_layer_map_covers_every_product_module() -> None:
    # a new folder must be placed in a layer on purpose; a top-level module is foundation
    folders = {
        ".".join(_module_name(p).split(".")[:2])
        for p in _product_files()
        if _module_name(p).count(".") >= 2 or p.name == "__init__.py" and p.parent.name != "tdm_r1"
    }
    named = {p for p, _ in LAYERS}
    assert folders <= named, f"folders missing from LAYERS: {sorted(folders - named)}"


def test_the_layers_are_folders_not_exceptions() -> None:
    # the folder-level rule: LAYERS names folders only (no module carved out of its folder's layer)
    assert all(p.count(".") <= 1 for p, _ in LAYERS), [p for p, _ in LAYERS if p.count(".") > 1]
    for prefix, _ in LAYERS[1:]:
        assert (REPO / prefix.replace("tdm_r1.", "tdm_r1/")).is_dir() or prefix in (
            "tdm_r1.rewards",
            "tdm_r1.benchmarks",  # installed from rewards/ and benchmarks/
        ), prefix


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """:func:`_imports` without those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("tdm_r1")]
        elif (
            isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tdm_r1")
        ):
            out += [(node.lineno, node.module)] + [
                (node.lineno, f"{node.module}.{a.name}") for a in node.names
            ]
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_loops_not_even_through_function_level_imports() -> None:
    modules = {_module_name(p): p for p in _product_files()}
    graph = {
        mod: {t for _, t in _runtime_imports(path) if t in modules and t != mod}
        for mod, path in modules.items()
    }
    loops = _cycles(graph)
    assert not loops, "import loops (a function-level import that breaks a loop is still one):\n" + "\n".join(
        " <-> ".join(c) for c in loops
    )


def test_the_loop_finder_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
