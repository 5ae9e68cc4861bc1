"""What the arena leaves in ``results/arena``: per-reward tables (written by ``run``), curves,
image grids and ``arena.md``, the tables as Markdown with links to the figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tdm_r1.apps.arena.figures import image_grid, plot_curves
from tdm_r1.apps.arena.run import ArenaPaths, curves_path
from tdm_r1.eval.arena_table import to_markdown
from tdm_r1.eval.cache import atomic_write_text


def write_outputs(
    tables: dict[str, pd.DataFrame], paths: ArenaPaths, cache_root: Path | None = None
) -> list[Path]:
    """Curves and grid per reward, and ``arena.md`` over every reward table present."""
    from tdm_r1.eval.arena_table import read_tables

    written: list[Path] = []
    for reward, table in tables.items():
        cpath = curves_path(paths, reward)
        curves = pd.read_csv(cpath) if cpath.is_file() else pd.DataFrame()
        for p in (
            plot_curves(table, curves, reward, paths.arena / f"{reward}.curves.png"),
            image_grid(table, paths.evals, paths.arena / f"{reward}.grid.png", cache_root=cache_root),
        ):
            if p is not None:
                written.append(p)
    all_tables = read_tables(paths.results)
    lines = [
        "# RL method arena",
        "",
        "Written by `tdmbench arena` (do not edit by hand). Every run starts from a shipped toy model and "
        "trains with its method's public hyper-parameters (the presets `toy-<method>-<teacher|4step>-<reward>`, "
        "`toy-<reward>` for TDM-R1) for the same number of reward evaluations, with several training seeds. "
        "Deltas are paired against the run's start weights sampled the way the trained model samples, on the "
        "same prompts and seeds, then pooled over seeds with a 95% t-interval over the seeds; a gain or a "
        "difference whose CI includes 0 is not significant. `docs/arena.md` says how to read the tables.",
        "",
        *to_markdown(all_tables),
    ]
    for reward in all_tables:
        for kind, what in (("curves", "training curves"), ("grid", "image grid")):
            if (paths.arena / f"{reward}.{kind}.png").is_file():
                lines.append(f"![{reward} {what}]({reward}.{kind}.png)")
        lines.append("")
    md = paths.arena / "arena.md"
    atomic_write_text(md, "\n".join(lines))
    return [*written, md]
