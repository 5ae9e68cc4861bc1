"""The RL method arena's results: ``results/arena/<reward>.csv``, read and rendered.

One row per arena cell (method x start model) for one training reward: the in-domain and
out-of-domain metric of the trained model at its own inference NFE, each with the paired delta
against its start model (the start weights sampled as the trained model samples, ``start_model``;
same prompts and seeds) and its 95% CI, and what the training cost:
reward evaluations (the equal budget), training images, wall-clock and peak memory. A cell that
failed keeps its row with ``status = "error"`` and the error. ``tdmbench arena`` writes the
files; the leaderboard and the report render them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from tdm_r1.eval.leaderboard_md import fmt, fmt_ci, verdict

ARENA_DIR = "arena"
#: Columns of ``results/arena/<reward>.csv``, in order.
COLUMNS: tuple[str, ...] = (
    "reward",
    "method",
    "model",
    "run",
    "status",
    "error",
    "budget",
    "epochs",
    "reward_evals",
    "train_images",
    "nfe",
    "start_model",
    "start_nfe",
    "in_suite",
    "in_metric",
    "in_start",
    "in_value",
    "in_delta",
    "in_ci_low",
    "in_ci_high",
    "in_significant",
    "ood_suite",
    "ood_metric",
    "ood_start",
    "ood_value",
    "ood_delta",
    "ood_ci_low",
    "ood_ci_high",
    "ood_significant",
    "wall_clock_s",
    "rollout_s",
    "peak_mem_mb",
    "device",
    "config_hash",
    "arena_version",
)


def table_path(results_root: Path, reward: str) -> Path:
    return results_root / ARENA_DIR / f"{reward}.csv"


def read_table(path: Path) -> pd.DataFrame:
    """One reward's arena table (empty, with the columns, when there is none yet)."""
    if not path.is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    from tdm_r1.csv_files import read_csv

    df = read_csv(path, "arena table", dtype={"config_hash": str, "error": str, "arena_version": str})
    for col in COLUMNS:
        if col not in df:
            df[col] = math.nan
    return df.loc[:, list(COLUMNS)]


def read_tables(results_root: Path) -> dict[str, pd.DataFrame]:
    """reward -> its arena table, for every ``results/arena/<reward>.csv``."""
    folder = results_root / ARENA_DIR
    if not folder.is_dir():
        return {}
    return {p.stem: read_table(p) for p in sorted(folder.glob("*.csv")) if ".curves" not in p.name}


def _sig(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip().lower() in ("true", "1", "1.0")


def row_label(r: pd.Series) -> str:
    """``method @ model``, and the start it is paired with when that is sampled otherwise."""
    label = f"{r['method']} @ {r['model']}"
    start = r.get("start_model")
    return f"{label} (vs {start})" if isinstance(start, str) and start and start != r["model"] else label


def _delta_cells(r: pd.Series, side: str) -> list[str]:
    delta = r[f"{side}_delta"]
    return [
        f"{fmt(r[f'{side}_start'])} → {fmt(r[f'{side}_value'])}",
        fmt(delta, signed=True),
        fmt_ci(r[f"{side}_ci_low"], r[f"{side}_ci_high"]),
        "" if pd.isna(delta) else verdict(_sig(r[f"{side}_significant"]), float(delta), True),
    ]


def to_markdown(tables: dict[str, pd.DataFrame], *, level: int = 2) -> list[str]:
    """Markdown lines: one table per training reward (rows in the table's order)."""
    lines: list[str] = []
    h = "#" * level
    for reward, df in tables.items():
        if df.empty:
            continue
        first = df.iloc[0]
        budgets = sorted({int(b) for b in df["budget"].dropna()})
        if len(budgets) > 1:
            lines += [
                f"**Budgets differ between rows ({budgets}): these rows are not an equal-budget comparison.**",
                "",
            ]
        lines += [
            f"{h} RL method arena: trained on toy {reward}",
            "",
            f"Equal budget: {int(first['budget'])} reward evaluations per run. In-domain: "
            f"{first['in_suite']} {first['in_metric']}; out-of-domain: {first['ood_suite']} "
            f"{first['ood_metric']}; each at the model's own inference NFE, paired against the weights "
            "the run started from sampled the same way (same NFE and CFG, same prompts and seeds), 95% CI. "
            "Wall-clock: training epochs on this "
            "machine (model loading and evaluation excluded); peak memory: the training process.",
            "",
            "| method @ start | NFE | in-domain start → end | Δ | 95% CI | verdict | out-of-domain start → end "
            "| Δ | 95% CI | verdict | reward evals | train images | wall-clock (s) | peak mem (MiB) |",
            "|---|---:|---|---:|---|---|---|---:|---|---|---:|---:|---:|---:|",
        ]
        for _, r in df.iterrows():
            name = row_label(r)
            if r["status"] != "ok":
                lines.append(f"| {name} | | error: {r['error']} | | | | | | | | | | | |")
                continue
            cells = [
                name,
                "" if pd.isna(r["nfe"]) else str(int(r["nfe"])),
                *_delta_cells(r, "in"),
                *_delta_cells(r, "ood"),
                str(int(r["reward_evals"])),
                str(int(r["train_images"])),
                f"{float(r['wall_clock_s']):.0f}",
                f"{float(r['peak_mem_mb']):.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def to_html(tables: dict[str, pd.DataFrame]) -> str:
    """The report's arena tables (same cells as :func:`to_markdown`)."""
    import html

    parts = []
    for reward, df in tables.items():
        if df.empty:
            continue
        head = (
            "<tr><th>method @ start</th><th>NFE</th><th>in-domain start → end</th><th>Δ</th><th>95% CI</th>"
            "<th>verdict</th><th>out-of-domain start → end</th><th>Δ</th><th>95% CI</th><th>verdict</th>"
            "<th>reward evals</th><th>wall-clock (s)</th><th>peak mem (MiB)</th></tr>"
        )
        body = []
        for _, r in df.iterrows():
            name = html.escape(row_label(r))
            if r["status"] != "ok":
                body.append(
                    f'<tr class="error"><td>{name}</td><td colspan="12">error: {html.escape(str(r["error"]))}</td></tr>'
                )
                continue
            cells = [
                "" if pd.isna(r["nfe"]) else str(int(r["nfe"])),
                *_delta_cells(r, "in"),
                *_delta_cells(r, "ood"),
                str(int(r["reward_evals"])),
                f"{float(r['wall_clock_s']):.0f}",
                f"{float(r['peak_mem_mb']):.0f}",
            ]
            tds = "".join(f'<td class="num">{html.escape(c).replace("**", "")}</td>' for c in cells)
            body.append(f"<tr><td>{name}</td>{tds}</tr>")
        parts.append(
            f"<h3>Trained on toy {html.escape(reward)} ({int(df.iloc[0]['budget'])} reward evaluations per run)</h3>"
            f'<table class="arena" data-reward="{html.escape(reward)}"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    return "\n".join(parts)
