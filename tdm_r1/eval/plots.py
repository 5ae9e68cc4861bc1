"""Leaderboard figures (matplotlib, PNG): per-metric bars and one radar chart per RL run.

- ``plots/<benchmark>__<metric>.png``: one bar per entry with a number in that column (measured:
  solid with the 95% CI; reported: hatched grey), for every column that has a measured value.
- ``plots/radar__<model>.png``: for each measured model with a few-step base or a baseline, its
  in-domain axes (★) then its out-of-domain axes, with the references as further polygons. Each
  axis is min-max scaled over the models drawn (worst -> 0.25, best -> 1), so the chart shows who
  leads where, not absolute gaps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tdm_r1.eval.formatting import arrow
from tdm_r1.eval.leaderboard import Leaderboard, split_column
from tdm_r1.eval.results import file_stem


def pyplot():  # noqa: ANN202 - matplotlib module
    """matplotlib.pyplot on the file-only Agg backend (no display on CI machines)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:  # noqa: ANN001
    """Write ``fig`` as a PNG atomically (a reader never sees half a file)."""
    import io

    from tdm_r1.eval.cache import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def bar_charts(lb: Leaderboard, out_dir: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    measured = lb.measured()
    for col in lb.metrics:
        if measured[col].notna().sum() == 0:
            continue
        rows = lb.table[lb.table[col].notna()]
        labels, values, colors, hatches, errs = [], [], [], [], []
        for _, r in rows.iterrows():
            v = float(r[col])
            star = " ★" if col in lb.in_domain.get(r["model"], []) and r["kind"] == "measured" else ""
            suffix = "" if r["kind"] == "measured" else " (reported)"
            labels.append(f"{r['model']}{star}{suffix}")
            values.append(v)
            lo, hi = lb.ci.get((r["model"], col), (math.nan, math.nan)) if r["kind"] == "measured" else (v, v)
            errs.append((v - lo if not math.isnan(lo) else 0.0, hi - v if not math.isnan(hi) else 0.0))
            colors.append("#3b6ea8" if r["kind"] == "measured" else "#bbbbbb")
            hatches.append("" if r["kind"] == "measured" else "//")
        height = 0.9 + 0.32 * len(rows)
        fig, ax = plt.subplots(figsize=(7, height))
        y = np.arange(len(values))
        bars = ax.barh(y, values, color=colors, xerr=np.array(errs).T, capsize=3, edgecolor="#444444")
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        bench, metric = split_column(col)
        ax.set_title(f"{bench}: {metric} ({arrow(lb.higher_is_better[col])} better)")
        ax.set_xlabel(metric)
        ax.grid(axis="x", alpha=0.3)
        paths.append(save_png(fig, out_dir / f"{file_stem(bench)}__{file_stem(metric)}.png"))
        plt.close(fig)
    return paths


def radar_charts(lb: Leaderboard, out_dir: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    measured = lb.measured().set_index("model")
    for model, entry in measured.iterrows():
        refs: list[tuple[str, str]] = []
        for rel in ("few_step_base", "baseline"):
            name = entry[rel]
            if name in measured.index and name != model and name not in [n for _, n in refs]:
                refs.append((rel, name))
        if not refs:
            continue
        inside = lb.in_domain.get(model, [])
        cols = [c for c in lb.metrics if not math.isnan(entry[c])]
        cols = [c for c in cols if c in inside] + [c for c in cols if c not in inside]
        if len(cols) < 3:
            continue
        group = [model] + [name for _, name in refs]
        data = measured.loc[group, cols].astype(float)
        scaled = {}
        for c in cols:
            v = data[c].to_numpy()
            lo, hi = np.nanmin(v), np.nanmax(v)
            s = np.ones_like(v) if hi == lo else (v - lo) / (hi - lo)
            if not lb.higher_is_better[c]:
                s = 1 - s if hi != lo else s
            scaled[c] = 0.25 + 0.75 * s
        angles = np.linspace(0, 2 * np.pi, len(cols), endpoint=False)
        fig, ax = plt.subplots(figsize=(6.5, 6.5), subplot_kw={"projection": "polar"})
        looks = {
            "few_step_base": ("#2471a3", "--", "few-step base"),
            "baseline": ("#7f8c8d", ":", "baseline"),
        }
        styles = {model: ("#c0392b", "-", "")} | {name: looks[rel] for rel, name in refs}
        for i, name in enumerate(group):
            r = np.array([scaled[c][i] for c in cols])
            color, ls, what = styles[name]
            label = f"{name} ({what})" if what else name
            ax.plot(np.append(angles, angles[0]), np.append(r, r[0]), ls, color=color, label=label)
            if i == 0:
                ax.fill(np.append(angles, angles[0]), np.append(r, r[0]), color=color, alpha=0.15)
        ax.set_xticks(angles, [("★ " if c in inside else "") + c for c in cols], fontsize=7)
        ax.set_yticks([0.25, 0.625, 1.0], ["worst", "", "best"], fontsize=6)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{model}: in-domain (★) vs out-of-domain", fontsize=10)
        ax.legend(loc="lower left", bbox_to_anchor=(-0.15, -0.15), fontsize=7)
        paths.append(save_png(fig, out_dir / f"radar__{file_stem(model)}.png"))
        plt.close(fig)
    return paths


def write_all(lb: Leaderboard, out_dir: Path) -> list[Path]:
    """Write every figure into ``out_dir``, removing figures of entries that no longer exist."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    return bar_charts(lb, out_dir) + radar_charts(lb, out_dir)
