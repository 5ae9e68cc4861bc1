"""Text tables for ``tdmbench ls`` (rewards, models, benchmarks, methods, data, weights)."""

from __future__ import annotations

from typing import Any

from tdm_r1.errors import UnknownNameError


def load_all_manifests() -> None:
    """Import every module that declares weight files: the built-in ones (``weights.MANIFEST``
    loads them) and the modules of every registered reward, plug-ins included."""
    from tdm_r1.registry import REWARDS
    from tdm_r1.weights import MANIFEST

    MANIFEST.names()
    REWARDS.entries()  # imports lazy reward targets: their modules declare their files


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="github")


def render(kind: str) -> str:
    kind = kind.strip().lower().rstrip("s")
    if kind == "reward":
        from tdm_r1.registry import REWARDS

        rows = []
        for e in REWARDS.entries():
            cls = e.obj
            rows.append(
                {
                    "name": e.name,
                    "aliases": ", ".join(e.aliases),
                    "version": getattr(cls, "version", ""),
                    "better": "higher" if getattr(cls, "higher_is_better", True) else "lower",
                    "scale": getattr(cls, "scale", ""),
                }
            )
        return _table(rows)
    if kind == "model":
        from tdm_r1.registry import MODELS

        rows = []
        for e in MODELS.entries():
            describe = getattr(e.obj, "describe", None)
            rows.append({"name": e.name, **(describe() if callable(describe) else {})})
        return _table(rows)
    if kind == "benchmark":
        from tdm_r1.registry import BENCHMARKS

        rows = []
        for e in BENCHMARKS.entries():
            describe = getattr(e.obj, "describe", None)
            rows.append({"name": e.name, **(describe() if callable(describe) else {})})
        return _table(rows)
    if kind == "method":
        return _table(method_rows())
    if kind == "recipe":
        return _table(recipe_rows())
    if kind == "data":
        from tdm_r1 import data
        from tdm_r1.errors import MissingDataError

        rows = []
        for f in data.DATA_FILES.values():
            try:
                data.data_path(f.name)
                state = "ok"
            except MissingDataError as exc:
                state = "corrupt" if "sha256" in str(exc) else "missing"
            rows.append({"name": f.name, "file": f.relpath, "state": state, "sha256": f.sha256[:12]})
        return _table(rows)
    if kind == "weight":
        from tdm_r1 import weights

        load_all_manifests()
        rows = [
            {
                "key": w.key,
                "hub id": w.hub_id,
                "file": w.filename or "(repository)",
                "size": w.size,
                "status": weights.status(w),
                "sha256 pin": (w.sha256[:12] + "...") if w.sha256 else "-",
                "revision": w.revision or "-",
                "local path via": f"{w.option} / ${w.env}",
            }
            for w in (e.obj for e in weights.MANIFEST.entries())
        ]
        return _table(rows)
    raise UnknownNameError(
        f"cannot list {kind!r}: choose rewards, models, benchmarks, methods, recipes, data or weights"
    )


def recipe_rows() -> list[dict[str, Any]]:
    """One row per shipped training recipe (``tdm_r1/recipes/*.yaml``, ``--config NAME``): what it
    trains from what, with which reward, for how long, and its first comment line."""
    from tdm_r1.train.config import RECIPES_DIR, load_train_config

    rows = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        cfg = load_train_config(path)
        first = next(
            (ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), ""
        )
        rows.append(
            {
                "recipe": path.stem,
                "method": cfg.method_name if cfg.rewards else cfg.method.name,
                "model": cfg.model.name,
                "rewards": ", ".join(f"{k}={v:g}" for k, v in cfg.rewards.items()) or "-",
                "epochs": cfg.max_epochs,
                "about": first,
            }
        )
    return rows


def toy_presets_by_method() -> dict[str, list[str]]:
    """Shipped ``toy-*`` training presets grouped by the method they train. A preset without rewards
    (``toy-r1``: the reward comes from ``--reward``) counts for its configured method, unless its
    groups hold one image, which no reward can rank: then it is distillation (``toy-distill``)."""
    from tdm_r1.train.config import RECIPES_DIR, load_train_config

    out: dict[str, list[str]] = {}
    for path in sorted(RECIPES_DIR.glob("toy-*.yaml")):
        cfg = load_train_config(path)
        name = cfg.method_name if cfg.rewards or cfg.rollout.group_size < 2 else cfg.method.name
        out.setdefault(name, []).append(path.stem)
    return out


def method_rows() -> list[dict[str, Any]]:
    """One row per registered training method, in registration order (built-ins, then plug-ins):
    reward or not, rollout kind, its options section, summary, toy presets, where it comes from."""
    from tdm_r1.registry import METHODS

    presets = toy_presets_by_method()
    rows = []
    for name in METHODS.names_in_order():
        e = METHODS.entry(name)
        cls = e.obj
        doc = (cls.__doc__ or "").replace("``", "`").strip().splitlines()
        section = e.meta.get("section")
        rows.append(
            {
                "name": e.name,
                "reward": "yes" if getattr(cls, "uses_reward", True) else "no",
                "rollout": getattr(cls, "rollout_kind", "ode"),
                "options": f"method.{section}" if section else "-",
                "description": doc[0] if doc else "",
                "toy presets": ", ".join(
                    presets.get(e.name, []) or (e.meta.get("toy_recipes") or {}).values()
                )
                or "-",
                "from": "built-in" if e.meta.get("builtin") else cls.__module__,
            }
        )
    return rows
