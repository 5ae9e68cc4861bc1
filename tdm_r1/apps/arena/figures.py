"""The arena's figures: training curves per reward, and image grids (start models and trained cells).

- ``results/arena/<reward>.curves.png``: the training reward (mean over each epoch's rollout
  images and over seeds, the reward the method optimises; a trailing mean over 8 epochs drawn
  through the epoch means) against reward evaluations and against wall-clock, one line per cell;
  below, the paired in-domain gain at each budget checkpoint (mean over seeds, band: 95% CI over
  seeds) at the model's own inference NFE. The two are different numbers (rollout sampler and partial
  credit vs the inference sampler and the benchmark's rule: a training curve is not a benchmark result).
- ``results/arena/<reward>.grid.png``: sample 0 of evenly spread in-domain prompts, one row per
  start model then per trained cell (full budget; the lowest seed whose images are in the
  evaluation cache, named in the row): blur, collapse and reward hacking show here, not in means.
  Images come from the evaluation cache; the PNG is committed, the cache is not. Where no trained
  cell's images are cached, no grid is written.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tdm_r1.eval.plots import pyplot, save_png

#: Epochs of the trailing mean drawn through the training-reward dots.
SMOOTH = 8


def plot_curves(table: pd.DataFrame, curves: pd.DataFrame, reward: str, out: Path) -> Path | None:
    from tdm_r1.eval import arena_stats as st

    if curves.empty or not st.cells(table):
        return None
    if "seed" not in curves:
        curves = curves.assign(seed=0)
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
    ok = st.normalised(table)
    for method, model in st.cells(table):
        label = f"{method} @ {model}"
        style = "-" if model == "toy-4step" else "--"
        c = curves[(curves["method"] == method) & (curves["model"] == model)]
        # Each epoch draws only 8 prompts, so the raw epoch mean swings with the prompts (the same
        # prompts for every method with the same seed); the line is a trailing mean over SMOOTH epochs
        # of the mean over seeds.
        by_epoch = c.groupby("epoch").agg(
            reward_evals=("reward_evals", "first"),
            wall_clock_s=("wall_clock_s", "mean"),
            train_reward=("train_reward", "mean"),
        )
        smooth = by_epoch["train_reward"].rolling(SMOOTH, min_periods=1).mean()
        color = None
        for ax, x in zip(axes[0], ("reward_evals", "wall_clock_s"), strict=True):
            (line,) = ax.plot(by_epoch[x], smooth, style, label=label, color=color)
            color = line.get_color()
            ax.plot(by_epoch[x], by_epoch["train_reward"], ".", color=color, alpha=0.3)
        curve = st.budget_curve(table, method, model)
        rows = ok[(ok["method"] == method) & (ok["model"] == model)]
        wall = rows.groupby("reward_evals")["wall_clock_s"].mean()
        xs = [0, *sorted(curve)]
        mean = [0.0, *(curve[b].mean for b in sorted(curve))]
        low = [
            0.0,
            *(curve[b].ci_low if curve[b].significant is not None else curve[b].mean for b in sorted(curve)),
        ]
        high = [
            0.0,
            *(curve[b].ci_high if curve[b].significant is not None else curve[b].mean for b in sorted(curve)),
        ]
        n = max((len(p.seeds) for p in curve.values()), default=0)
        for ax, x in zip(axes[1], (xs, [0.0, *(float(wall[b]) for b in sorted(curve))]), strict=True):
            ax.plot(
                x,
                mean,
                style,
                marker="o",
                color=color,
                label=f"{label} ({int(rows['nfe'].iloc[0])} NFE, {n} seeds)",
            )
            ax.fill_between(x, low, high, color=color, alpha=0.15)
    metric = f"{ok.iloc[0]['in_suite']} {ok.iloc[0]['in_metric']}"
    axes[0][0].set_ylabel(f"training reward ({reward})")
    axes[1][0].set_ylabel(f"gain in {metric}")
    axes[1][0].axhline(st.REACH, color="grey", lw=0.8, ls=":")
    axes[1][1].axhline(st.REACH, color="grey", lw=0.8, ls=":")
    axes[1][0].set_xlabel("reward evaluations")
    axes[1][1].set_xlabel("training wall-clock (s, this machine)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=8, loc="best")
    axes[1][1].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"RL method arena, trained on toy {reward}, equal reward-evaluation budget\n"
        f"top: rollout reward, mean over seeds (dots: epoch; line: {SMOOTH}-epoch mean); bottom: paired gain in "
        f"{metric} at the budget checkpoints, own inference NFE, band: 95% CI over seeds (dotted: +{st.REACH:.2f})",
        fontsize=10,
    )
    path = save_png(fig, out)
    plt.close(fig)
    return path


def _grid_rows(table: pd.DataFrame) -> list[tuple[str, list[tuple[str, str]]]]:
    """(row, [(label, model name in the eval files), ...]): start models first, then the trained
    cells at the full budget with one candidate per seed (lowest first): the grid shows the first
    seed whose images are still in the evaluation cache."""
    ok = table[table["status"] == "ok"]
    starts = list(
        dict.fromkeys(
            s if isinstance(s, str) else m for s, m in zip(ok["start_model"], ok["model"], strict=True)
        )
    )
    from tdm_r1.eval.arena_stats import normalised

    final = normalised(table)
    final = final[final["final"]].sort_values("seed") if len(final) else final
    rows: list[tuple[str, list[tuple[str, str]]]] = [(m, [(f"{m} (start)", m)]) for m in starts]
    cells: dict[str, list[tuple[str, str]]] = {}
    for _, r in final.iterrows():
        name = str(r["checkpoint"]) if isinstance(r.get("checkpoint"), str) else str(r["run"])
        cells.setdefault(f"{r['method']} @ {r['model']}", []).append(
            (f"{r['method']} @ {r['model']}, seed {int(r['seed'])}", name)
        )
    return rows + list(cells.items())


def image_grid(
    table: pd.DataFrame,
    evals_root: Path,
    out: Path,
    *,
    n_prompts: int = 8,
    size: int = 112,
    cache_root: Path | None = None,
) -> Path | None:
    """Sample 0 of ``n_prompts`` evenly spread in-domain prompts per model, as one PNG."""
    from PIL import Image, ImageDraw

    from tdm_r1.eval.cache import ImageCache
    from tdm_r1.eval.results import best_run_files

    ok = table[table["status"] == "ok"]
    if ok.empty:
        return None
    suite = str(ok.iloc[0]["in_suite"])
    frames: dict[str, pd.DataFrame] = {}
    for _, candidates in _grid_rows(table):
        for _, name in candidates:
            path = best_run_files(suite, name, evals_root).samples
            if path.is_file():
                frames[name] = pd.read_parquet(path)
    if not frames:
        return None
    first = next(iter(frames.values()))
    ids = list(dict.fromkeys(first["prompt_id"]))
    step = max(1, len(ids) // n_prompts)
    picked = ids[::step][:n_prompts]
    cache = ImageCache(cache_root)

    def cached(name: str) -> list:
        df = frames.get(name)
        out = []
        for pid in picked:
            hit = None if df is None else df[(df["prompt_id"] == pid) & (df["sample"] == 0)]
            out.append(None if hit is None or hit.empty else cache.get(str(hit["image_key"].iloc[0])))
        return out

    rows = []
    for _, candidates in _grid_rows(table):  # per row: the first seed with its images cached
        found = next(((lab, ims) for lab, n in candidates if any(ims := cached(n))), None)
        rows.append(found or (candidates[0][0], [None] * len(picked)))
    if not any(any(ims) for _, ims in rows[1:]) and len(rows) > 1:
        return None  # no trained cell's images are cached here: a grid of blanks would mislead
    label_w, head_h = 220, 16
    canvas = Image.new("RGB", (label_w + size * len(picked), head_h + size * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, pid in enumerate(picked):
        draw.text((label_w + j * size + 2, 2), str(pid)[:18], fill="black")
    for i, (label, images) in enumerate(rows):
        y = head_h + i * size
        draw.text((4, y + size // 2 - 6), label[:36], fill="black")
        for j, entry in enumerate(images):
            x = label_w + j * size
            if entry is None:
                draw.rectangle((x + 2, y + 2, x + size - 2, y + size - 2), outline="red")
                draw.text((x + 6, y + size // 2 - 6), "not cached", fill="red")
                continue
            with Image.open(entry.path) as im:
                canvas.paste(im.convert("RGB").resize((size, size), Image.Resampling.NEAREST), (x, y))
    from io import BytesIO

    from tdm_r1.eval.cache import atomic_write_bytes

    buf = BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return out
