"""The arena's figures: training curves per reward, and image grids (start models and trained cells).

- ``results/arena/<reward>.curves.png``: the training reward (mean over each epoch's rollout
  images, the reward the method optimises; a trailing mean over 8 epochs drawn through the epoch
  means) against reward evaluations and against wall-clock,
  one line per cell; below, the in-domain benchmark metric at the start and the end of each run
  at the model's own inference NFE. The two are different numbers (rollout sampler and partial
  credit vs the inference sampler and the benchmark's rule; ``rl-methods.md`` §8.2 pitfall 7).
- ``results/arena/<reward>.grid.png``: sample 0 of evenly spread in-domain prompts, one row per
  start model then per trained cell: blur, collapse and reward hacking show here, not in means.
  Images come from the evaluation cache; the PNG is committed, the cache is not.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tdm_r1.eval.plots import pyplot, save_png

#: Epochs of the trailing mean drawn through the training-reward dots.
SMOOTH = 8


def plot_curves(table: pd.DataFrame, curves: pd.DataFrame, reward: str, out: Path) -> Path | None:
    ok = table[table["status"] == "ok"]
    if curves.empty or ok.empty:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
    for (method, model), c in curves.groupby(["method", "model"], sort=False):
        label = f"{method} @ {model}"
        style = "-" if model == "toy-4step" else "--"
        # Each epoch draws only 8 prompts, so the raw epoch mean swings with the prompts (the same
        # prompts for every cell: one seeded stream); the line is a trailing mean over SMOOTH epochs.
        smooth = c["train_reward"].rolling(SMOOTH, min_periods=1).mean()
        for ax, x in zip(axes[0], ("reward_evals", "wall_clock_s"), strict=True):
            (line,) = ax.plot(c[x], smooth, style, label=label)
            ax.plot(c[x], c["train_reward"], ".", color=line.get_color(), alpha=0.3)
        r = ok[(ok["method"] == method) & (ok["model"] == model)]
        if len(r):
            r = r.iloc[0]
            ends = [0.0, float(r["reward_evals"])], [0.0, float(r["wall_clock_s"])]
            for ax, xs in zip(axes[1], ends, strict=True):
                ax.errorbar(
                    xs,
                    [float(r["in_start"]), float(r["in_value"])],
                    yerr=[
                        [0, float(r["in_delta"] - r["in_ci_low"])],
                        [0, float(r["in_ci_high"] - r["in_delta"])],
                    ],
                    fmt=style,
                    marker="o",
                    capsize=3,
                    label=f"{label} ({int(r['nfe'])} NFE)",
                )
    metric = f"{ok.iloc[0]['in_suite']} {ok.iloc[0]['in_metric']}"
    axes[0][0].set_ylabel(f"training reward ({reward})")
    axes[1][0].set_ylabel(metric)
    axes[1][0].set_xlabel("reward evaluations")
    axes[1][1].set_xlabel("training wall-clock (s, this machine)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=8, loc="best")
    axes[1][1].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"RL method arena, trained on toy {reward}, equal reward-evaluation budget\n"
        f"top: rollout reward (dots: epoch mean; line: {SMOOTH}-epoch mean); bottom: {metric} at start and end, "
        "own inference NFE, bar: 95% CI of the paired gain",
        fontsize=10,
    )
    path = save_png(fig, out)
    plt.close(fig)
    return path


def _grid_rows(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(row label, model name in the eval files): start models first, then the trained cells."""
    ok = table[table["status"] == "ok"]
    starts = list(
        dict.fromkeys(
            s if isinstance(s, str) else m for s, m in zip(ok["start_model"], ok["model"], strict=True)
        )
    )
    return [(f"{m} (start)", m) for m in starts] + [
        (f"{r['method']} @ {r['model']}", str(r["run"])) for _, r in ok.iterrows()
    ]


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
    rows = _grid_rows(table)
    frames = {}
    for _, name in rows:
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
    label_w, head_h = 220, 16
    canvas = Image.new("RGB", (label_w + size * len(picked), head_h + size * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, pid in enumerate(picked):
        draw.text((label_w + j * size + 2, 2), str(pid)[:18], fill="black")
    for i, (label, name) in enumerate(rows):
        y = head_h + i * size
        draw.text((4, y + size // 2 - 6), label[:36], fill="black")
        df = frames.get(name)
        for j, pid in enumerate(picked):
            x = label_w + j * size
            hit = None if df is None else df[(df["prompt_id"] == pid) & (df["sample"] == 0)]
            entry = None if hit is None or hit.empty else cache.get(str(hit["image_key"].iloc[0]))
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
