"""The RL method arena's results: ``results/arena/<reward>.csv``, read and rendered.

One row per (method, start model, training seed, budget checkpoint) for one training reward: the
in-domain metric of the checkpoint at its own inference NFE on all, seen and unseen cases (seen /
unseen by RL training, :mod:`tdm_r1.toyworld.holdout`) and the out-of-domain metric, each with the
paired delta against its start model (the start weights sampled as the trained model samples,
``start_model``; same prompts and seeds) and its 95% CI, and what training had cost by then:
reward evaluations, training images, wall-clock and peak memory. A cell that failed keeps a row
with ``status = "error"`` and the error. ``tdmbench arena`` writes the files; the leaderboard and
the report render them, pooled over seeds (:mod:`tdm_r1.eval.arena_stats`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from tdm_r1.eval import arena_stats as st
from tdm_r1.eval.formatting import fmt, fmt_ci, verdict

ARENA_DIR = "arena"
#: In-domain case subsets with their own columns (``in_<subset>_delta``, ...); "all" is ``in_delta``.
SUBSETS = ("all", "seen", "unseen")
_STATS = ("start", "value", "delta", "ci_low", "ci_high", "significant")
#: Columns of ``results/arena/<reward>.csv``, in order.
COLUMNS: tuple[str, ...] = (
    "reward",
    "method",
    "model",
    "seed",
    "run",
    "checkpoint",
    "status",
    "error",
    "budget",
    "epochs",
    "epoch",
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
    *(f"in_{sub}_{x}" for sub in SUBSETS[1:] for x in _STATS),
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

    df = read_csv(
        path, "arena table", dtype={"config_hash": str, "error": str, "arena_version": str, "checkpoint": str}
    )
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


def _pooled(p: st.Pooled, one_seed: pd.DataFrame | None = None, pre: str = "in_") -> list[str]:
    """Δ, CI, verdict of a gain pooled over seeds. With one seed there is no CI over seeds:
    ``one_seed`` (that seed's final row) then gives its paired CI over prompts, marked so."""
    if math.isnan(p.mean):
        return ["", "", ""]
    if p.significant is None:
        if one_seed is not None and len(one_seed) == 1 and not pd.isna(one_seed[f"{pre}ci_low"].iloc[0]):
            r = one_seed.iloc[0]
            sig = bool(r[f"{pre}ci_low"] > 0 or r[f"{pre}ci_high"] < 0)
            return [
                fmt(p.mean, signed=True),
                fmt_ci(r[f"{pre}ci_low"], r[f"{pre}ci_high"]) + " (prompts, 1 seed)",
                verdict(sig, p.mean, True) + " (1 seed)",
            ]
        return [fmt(p.mean, signed=True), "", "no CI (1 seed)"]
    return [fmt(p.mean, signed=True), fmt_ci(p.ci_low, p.ci_high), verdict(p.significant, p.mean, True)]


def _per_seed(p: st.Pooled) -> str:
    return ", ".join(f"s{s}: {fmt(v, signed=True)}" for s, v in zip(p.seeds, p.per_seed, strict=True))


def _final_rows(df: pd.DataFrame, method: str, model: str) -> pd.DataFrame:
    ok = st.normalised(df)
    return ok[(ok["method"] == method) & (ok["model"] == model) & ok["final"]]


def gain_rows(df: pd.DataFrame) -> list[list[str]]:
    """The main table: per cell, the full-budget gains pooled over seeds, and the cost."""
    out = []
    for method, model in st.cells(df):
        rows = _final_rows(df, method, model)
        first = rows.iloc[0]
        reach = st.evals_to_reach(df, method, model)
        gain = st.gain(df, method, model)
        out.append(
            [
                row_label(first),
                "" if pd.isna(first["nfe"]) else str(int(first["nfe"])),
                str(len(gain.seeds)),
                f"{fmt(first['in_start'])} → {fmt(float(rows['in_value'].mean()))}",
                *_pooled(gain, rows),
                _per_seed(gain),
                *_pooled(st.gain(df, method, model, "in_unseen_delta"), rows, "in_unseen_")[:2],
                *_pooled(st.gain(df, method, model, "in_seen_delta"), rows, "in_seen_")[:2],
                *_pooled(st.gain(df, method, model, "ood_delta"), rows, "ood_"),
                "not reached" if reach is None else str(reach),
                str(int(first["reward_evals"])),
                f"{float(rows['wall_clock_s'].mean()):.0f}",
                f"{float(rows['peak_mem_mb'].max()):.0f}",
            ]
        )
    return out


GAIN_HEAD = (
    "| method @ start | NFE | seeds | in-domain start → end | Δ (mean over seeds) | 95% CI (over seeds) | verdict "
    "| per seed | unseen Δ | unseen CI | seen Δ | seen CI | out-of-domain Δ | CI | verdict "
    f"| reward evals to +{st.REACH:.2f} | reward evals | wall-clock (s) | peak mem (MiB) |"
)


def summary_line(df: pd.DataFrame, reward: str) -> str:
    """Per start model: the best method at equal budget and its margin over the runner-up with CI,
    or that no method is separable."""
    parts = []
    for model in dict.fromkeys(m for _, m in st.cells(df)):
        ranked = st.ranking(df, model)
        if len(ranked) < 2:
            continue
        (best, best_gain), (second, _) = ranked[0], ranked[1]
        d = st.margin(df, model, best, second)
        if d is None or math.isnan(d.mean):
            continue
        ci = fmt_ci(d.ci_low, d.ci_high)
        margin = f"{fmt(d.mean, signed=True)}{' ' + ci if ci else ''} over {second}"
        if d.significant is None:
            parts.append(
                f"From {model}, one seed only on toy {reward}: {best} has the highest gain "
                f"({fmt(best_gain.mean, signed=True)}, {margin}); no claim without a CI over seeds."
            )
        elif d.significant:
            parts.append(
                f"From {model}, **{best}** is best on toy {reward} at equal budget (gain "
                f"{fmt(best_gain.mean, signed=True)}): {margin}, {len(d.seeds)} seeds."
            )
        else:
            parts.append(
                f"From {model}, **no method is separable** on toy {reward} at equal budget: the highest mean "
                f"gain, {best} ({fmt(best_gain.mean, signed=True)}), is {margin}, not significant "
                f"({len(d.seeds)} seed{'s' if len(d.seeds) != 1 else ''})."
            )
    return " ".join(parts)


def pair_rows(df: pd.DataFrame) -> list[list[str]]:
    """Head to head: A minus B at the full budget for methods with the same start and NFE."""
    out = []
    for model, a, b, d in st.head_to_head(df):
        unseen = st.margin(df, model, a, b, "in_unseen_delta")
        out.append(
            [
                f"{a} − {b} @ {model}",
                str(len(d.seeds)),
                *_pooled(d)[:2],
                st.pair_verdict(a, b, d),
                *(_pooled(unseen)[:2] if unseen is not None else ["", ""]),
            ]
        )
    return out


def budget_rows(df: pd.DataFrame) -> tuple[list[int], list[list[str]]]:
    """The budget curve as a table: per cell, the pooled in-domain gain at each checkpoint."""
    curves = {c: st.budget_curve(df, *c) for c in st.cells(df)}
    budgets = sorted({b for c in curves.values() for b in c})
    rows = []
    for (method, model), curve in curves.items():
        cells = [f"{method} @ {model}"]
        for b in budgets:
            p = curve.get(b)
            cells.append("" if p is None else " ".join(x for x in _pooled(p)[:2] if x))
        rows.append(cells)
    return budgets, rows


def _error_lines(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "ok"]
    return [
        f"- {r['method']} @ {r['model']}, seed {0 if pd.isna(r['seed']) else int(r['seed'])}: error: {r['error']}"
        for _, r in bad.iterrows()
    ]


def _md_table(head: str, rows: list[list[str]]) -> list[str]:
    n = head.count("|") - 1
    return [head, "|" + "---|" * n, *("| " + " | ".join(r) + " |" for r in rows)]


def to_markdown(tables: dict[str, pd.DataFrame], *, level: int = 2) -> list[str]:
    """Markdown lines per training reward: the verdict, gains pooled over seeds, head to head,
    the budget curve, and the cells that failed."""
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
            "the run started from sampled the same way (same NFE and CFG, same prompts and seeds). Gains are "
            "means over training seeds with a 95% t-interval over the seeds; unseen = cases whose words or "
            "combinations RL training never saw. Wall-clock: training epochs on this machine (model loading "
            "and evaluation excluded); peak memory: the training process.",
            "",
        ]
        if st.cells(df):
            verdict_line = summary_line(df, reward)
            lines += [verdict_line, ""] if verdict_line else []
            lines += [*_md_table(GAIN_HEAD, gain_rows(df)), ""]
            pairs = pair_rows(df)
            if pairs:
                head = "| A − B @ start | seeds | Δ (mean over seeds) | 95% CI | verdict | unseen Δ | unseen CI |"
                lines += [f"{h}# Head to head (toy {reward}, full budget)", "", *_md_table(head, pairs), ""]
            budgets_at, rows = budget_rows(df)
            if len(budgets_at) > 1:
                head = "| method @ start | " + " | ".join(f"{b} evals" for b in budgets_at) + " |"
                lines += [
                    f"{h}# In-domain gain against the budget (toy {reward}; mean over seeds [95% CI])",
                    "",
                    *_md_table(head, rows),
                    "",
                ]
        errors = _error_lines(df)
        if errors:
            lines += ["Cells that failed:", "", *errors, ""]
    return lines


def to_html(tables: dict[str, pd.DataFrame]) -> str:
    """The report's arena tables (the main table of :func:`to_markdown`, and its verdict)."""
    import html

    parts = []
    heads = [c.strip() for c in GAIN_HEAD.strip("|").split("|")]
    for reward, df in tables.items():
        if df.empty:
            continue
        head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in heads) + "</tr>"
        body = []
        for cells in gain_rows(df) if st.cells(df) else []:
            name, rest = html.escape(cells[0]), cells[1:]
            tds = "".join(f'<td class="num">{html.escape(c).replace("**", "")}</td>' for c in rest)
            body.append(f"<tr><td>{name}</td>{tds}</tr>")
        for line in _error_lines(df):
            body.append(f'<tr class="error"><td colspan="{len(heads)}">{html.escape(line[2:])}</td></tr>')
        verdict_line = html.escape(summary_line(df, reward).replace("**", "")) if st.cells(df) else ""
        parts.append(
            f"<h3>Trained on toy {html.escape(reward)} ({int(df.iloc[0]['budget'])} reward evaluations per run)</h3>"
            + (f"<p>{verdict_line}</p>" if verdict_line else "")
            + f'<table class="arena" data-reward="{html.escape(reward)}"><thead>{head}</thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    return "\n".join(parts)
