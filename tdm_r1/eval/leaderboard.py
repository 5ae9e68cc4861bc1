"""All result CSVs + published numbers -> one comparison table (pandas).

Rows are *entries*: a measured model (from ``results/<benchmark>/<model>.csv``) or a reported
(model, source) pair from ``results/reference/published.csv``. A measured and a reported entry are
never merged, even when they name the same model: ``kind`` says which is which and ``source``
where a number comes from. Columns are ``<benchmark>/<metric>`` (``geneval/overall``,
``drawbench/pickscore``...).

Relations come from each run's ``meta.json`` (copied there from the model preset): an RL model's
``few_step_base`` and multi-step ``baseline`` give its delta rows, and its ``in_domain`` rewards
mark the columns it was trained for (every column that such a reward scores as a benchmark's
in-domain reward).

Deltas are paired (``tdm_r1.eval.paired``): both runs' per-sample values are matched by sample
key and the delta comes with a paired 95% CI and whether that CI excludes 0. Runs that cannot be
paired (no per-sample file, other suite version, other sample set) give an ``unpaired`` delta
with the reason and no CI.

Provenance (``tdm_r1.eval.provenance``): each measured entry has, per benchmark, a
``<benchmark>:protocol`` column (``official`` / ``approximate: <why>`` / toy world) and a
``<benchmark>:protocol_detail`` column (reward backends and engines, detector scale, template
hash, images per prompt), shown in every section of the Markdown table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tdm_r1.errors import ConfigError
from tdm_r1.eval.benchmark import GENEVAL_TASKS
from tdm_r1.eval.paired import run_delta
from tdm_r1.eval.provenance import combine, from_meta, protocol_column
from tdm_r1.eval.results import read_meta, read_summaries
from tdm_r1.paths import results_dir as default_results_dir

PUBLISHED_COLUMNS: tuple[str, ...] = (
    "model",
    "nfe",
    "benchmark",
    "metric",
    "value",
    "higher_is_better",
    "source",
    "secondary",
    "note",
)
ENTRY_COLUMNS: tuple[str, ...] = ("model", "nfe", "kind", "source", "few_step_base", "baseline", "in_domain")
#: Columns of ``Leaderboard.deltas`` / ``leaderboard_deltas.csv``: one row per (model, reference, metric).
DELTA_COLUMNS: tuple[str, ...] = (
    "model",
    "reference",
    "relation",
    "benchmark",
    "metric",
    "delta",
    "ci_low",
    "ci_high",
    "n",
    "method",
    "significant",
    "reason",
)

BENCHMARK_ORDER: tuple[str, ...] = ("geneval", "ocr", "pickscore", "drawbench", "toy-geneval", "toy-ocr")
METRIC_ORDER: tuple[str, ...] = (
    "overall",
    *GENEVAL_TASKS,
    "ocr",
    "pickscore",
    "hpsv2.1",
    "hpsv2",
    "hpsv3",
    "aesthetic",
    "imagereward",
    "clipscore",
    "vlm-judge",
)


def column(benchmark: str, metric: str) -> str:
    return f"{benchmark}/{metric}"


def split_column(col: str) -> tuple[str, str]:
    bench, _, metric = col.partition("/")
    return bench, metric


def _column_key(col: str) -> tuple[int, str, int, str]:
    bench, metric = split_column(col)
    b = BENCHMARK_ORDER.index(bench) if bench in BENCHMARK_ORDER else len(BENCHMARK_ORDER)
    m = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
    return (b, bench, m, metric)


@dataclass
class Leaderboard:
    """The comparison table and what is needed to render it.

    Attributes:
        table: one row per entry: ``ENTRY_COLUMNS`` then one column per metric.
        metrics: the metric columns, in display order.
        higher_is_better: direction of each metric column.
        in_domain: measured model -> its in-domain metric columns.
        deltas: ``DELTA_COLUMNS``: model minus its few-step base / baseline on every metric both
            measured, with the paired 95% CI (``method``; ``significant`` = the CI excludes 0).
        ci: (measured model, column) -> (ci_low, ci_high).
        sources: reported source text -> whether it is secondary.
        arena: training reward -> the RL method arena's table (``results/arena/<reward>.csv``).
        skipped: ``"<file>: <why>"`` of each results file left out as unreadable (``--skip-broken``).
    """

    table: pd.DataFrame
    metrics: list[str]
    higher_is_better: dict[str, bool]
    in_domain: dict[str, list[str]] = field(default_factory=dict)
    deltas: pd.DataFrame = field(default_factory=pd.DataFrame)
    ci: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    sources: dict[str, bool] = field(default_factory=dict)
    arena: dict[str, pd.DataFrame] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def measured(self) -> pd.DataFrame:
        """The rows measured here (from results/), not copied from a publication."""
        return self.table[self.table["kind"] == "measured"]

    def reported(self) -> pd.DataFrame:
        """The rows reported by publications (results/published.csv), with their sources."""
        return self.table[self.table["kind"] == "reported"]


def published_path(root: Path | None = None) -> Path:
    return (root or default_results_dir()) / "reference" / "published.csv"


def load_published(path: Path) -> pd.DataFrame:
    """Read and check ``published.csv`` (long format, one number per row, each with a source)."""
    if not path.is_file():
        return pd.DataFrame(columns=list(PUBLISHED_COLUMNS))
    from tdm_r1.csv_files import read_csv

    df = read_csv(
        path, "published numbers", dtype={"source": str, "note": str, "secondary": str}, keep_default_na=False
    )
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing columns {missing}; expected {list(PUBLISHED_COLUMNS)}")
    if (df["source"].str.strip() == "").any():
        bad = df.loc[df["source"].str.strip() == "", "model"].tolist()
        raise ConfigError(f"{path}: every published number needs a source; rows without one: {bad}")
    try:
        df["value"] = pd.to_numeric(df["value"], errors="raise")
    except ValueError as exc:
        raise ConfigError(f"{path}: a value is not a number ({exc}): fix the file") from exc
    df["nfe"] = pd.to_numeric(df["nfe"].replace("", float("nan")))
    df["higher_is_better"] = df["higher_is_better"].astype(str).str.lower().isin({"true", "1", "yes"})
    df["secondary"] = df["secondary"].astype(str).str.lower().isin({"true", "1", "yes"})
    return df


def _measured(
    root: Path, skipped: list[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, bool], dict[str, list[str]], dict]:
    summaries = read_summaries(root, skipped=skipped)
    entries: dict[str, dict[str, Any]] = {}
    directions: dict[str, bool] = {}
    in_domain: dict[str, list[str]] = {}
    ci: dict[tuple[str, str], tuple[float, float]] = {}
    metas: dict[tuple[str, str], dict[str, Any]] = {}
    for row in summaries.itertuples(index=False):
        model, bench = str(row.model), str(row.benchmark)
        if (bench, model) not in metas:
            metas[(bench, model)] = read_meta(bench, model, root)
        meta = metas[(bench, model)]
        col = column(bench, str(row.metric))
        entry = entries.setdefault(
            model,
            {
                "model": model,
                "nfe": row.nfe,
                "kind": "measured",
                "_versions": set(),
                "_limits": set(),
                "_meta": {},
                "_protocol": {},
            },
        )
        status, detail = str(row.protocol_status or ""), str(row.protocol or "")
        if not status:  # a result file written before the protocol columns existed
            rebuilt = from_meta(meta, str(row.reward))
            status, detail = rebuilt.status, rebuilt.detail
        entry["_protocol"].setdefault(bench, []).append((status, detail))
        entry["_versions"].add(str(row.tdmbench_version))
        if meta.get("limit") is not None:
            entry["_limits"].add(f"{bench}: --limit {meta['limit']}")
        model_meta = meta.get("model", {})
        for key in ("few_step_base", "baseline", "in_domain"):
            if model_meta.get(key) and not entry["_meta"].get(key):
                entry["_meta"][key] = model_meta[key]
        entry[col] = float(row.mean)
        ci[(model, col)] = (float(row.ci_low), float(row.ci_high))
        rewards = {r["name"]: r for r in meta.get("rewards", [])}
        info = rewards.get(str(row.reward), {})
        directions[col] = bool(info.get("higher_is_better", _reward_direction(str(row.reward))))
        trained = model_meta.get("in_domain") or []
        if str(row.reward) in trained and info.get("role", "in_domain") == "in_domain":
            in_domain.setdefault(model, []).append(col)
    out = []
    for model in sorted(entries):
        e = entries[model]
        rel = e.pop("_meta")
        e["source"] = "tdmbench " + ", ".join(sorted(e.pop("_versions")))
        limits = sorted(e.pop("_limits"))
        if limits:  # a partial run must not pass for a full one
            e["source"] += f" ({'; '.join(limits)})"
        e["few_step_base"] = rel.get("few_step_base") or ""
        e["baseline"] = rel.get("baseline") or ""
        e["in_domain"] = ";".join(rel.get("in_domain") or [])
        for bench, found in e.pop("_protocol").items():
            e[protocol_column(bench)] = combine(s for s, _ in found)
            e[protocol_column(bench, detail=True)] = " | ".join(dict.fromkeys(d for _, d in found if d))
        out.append(e)
    return out, directions, in_domain, ci


def _reward_direction(name: str) -> bool:
    """``higher_is_better`` of a registered reward (``True`` when it is not registered here)."""
    from tdm_r1.registry import REWARDS

    if name in REWARDS:
        return bool(getattr(REWARDS.get(name), "higher_is_better", True))
    return True


def _reported(published: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[str, bool], dict[str, bool]]:
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    directions: dict[str, bool] = {}
    sources: dict[str, bool] = {}
    for row in published.itertuples(index=False):
        key = (str(row.model), str(row.source))
        entry = entries.setdefault(
            key,
            {
                "model": row.model,
                "nfe": float("nan"),
                "kind": "reported",
                "source": row.source,
                "few_step_base": "",
                "baseline": "",
                "in_domain": "",
            },
        )
        if not math.isnan(row.nfe) and math.isnan(entry["nfe"]):
            entry["nfe"] = row.nfe
        col = column(str(row.benchmark), str(row.metric))
        if col in entry:
            raise ConfigError(f"published.csv gives {row.model} {col} twice for the same source")
        entry[col] = float(row.value)
        directions.setdefault(col, bool(row.higher_is_better))
        sources[str(row.source)] = bool(row.secondary)
    return list(entries.values()), directions, sources


def build(
    root: Path | None = None, published: Path | None = None, *, skip_broken: bool = False
) -> Leaderboard:
    """The leaderboard of every result under ``root`` plus ``published`` (default
    ``<root>/reference/published.csv``) and the RL method arena's tables.

    A results file that cannot be read whole is an error naming it (a model must never drop out
    of the table silently); ``skip_broken`` leaves such files out and lists them in ``skipped``.
    """
    from tdm_r1.eval.arena_table import read_tables

    root = root or default_results_dir()
    skipped: list[str] | None = [] if skip_broken else None
    measured, dir_m, in_domain, ci = _measured(root, skipped)
    reported, dir_r, sources = _reported(load_published(published or published_path(root)))
    directions = {**dir_r, **dir_m}
    metrics = sorted(directions, key=_column_key)
    protocols = [protocol_column(b, detail=d) for b in benchmarks_of(metrics) for d in (False, True)]
    table = pd.DataFrame(measured + reported, columns=[*ENTRY_COLUMNS, *metrics, *protocols])
    table["nfe"] = pd.to_numeric(table["nfe"]).round().astype("Int64")
    return Leaderboard(
        table=table.reset_index(drop=True),
        metrics=metrics,
        higher_is_better=directions,
        in_domain=in_domain,
        deltas=_deltas(table, metrics, root, skip_broken),
        ci=ci,
        sources=sources,
        arena=read_tables(root),
        skipped=skipped or [],
    )


def _deltas(table: pd.DataFrame, metrics: list[str], root: Path, skip_broken: bool = False) -> pd.DataFrame:
    """One row per (measured model, its measured few-step base / baseline, metric both have)."""
    measured = table[table["kind"] == "measured"].set_index("model")
    summaries = {
        (str(r.model), str(r.benchmark), str(r.metric)): r
        for r in read_summaries(root, skipped=[] if skip_broken else None).itertuples(index=False)
    }
    values: dict[tuple[str, str], pd.DataFrame | None] = {}
    rows = []
    for model, entry in measured.iterrows():
        for relation in ("few_step_base", "baseline"):
            ref = entry[relation]
            if not ref or ref not in measured.index:
                continue
            for col in metrics:
                if pd.isna(entry[col]) or pd.isna(measured.loc[ref, col]):
                    continue
                bench, metric = split_column(col)
                d = run_delta(bench, metric, str(model), str(ref), summaries, values, root)
                rows.append(
                    {
                        "model": model,
                        "reference": ref,
                        "relation": relation,
                        "benchmark": bench,
                        "metric": metric,
                        "delta": d.delta,
                        "ci_low": d.ci_low,
                        "ci_high": d.ci_high,
                        "n": d.n,
                        "method": d.method,
                        "significant": d.significant,
                        "reason": d.reason,
                    }
                )
    return pd.DataFrame(rows, columns=list(DELTA_COLUMNS))


# --------------------------------------------------------------------------------------- output
def benchmarks_of(metrics: list[str]) -> list[str]:
    out: list[str] = []
    for col in metrics:
        bench, _ = split_column(col)
        if bench not in out:
            out.append(bench)
    return out


__all__ = ["Leaderboard", "build", "load_published"]
