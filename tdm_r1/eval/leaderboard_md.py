"""The leaderboard as text: number formats, the significance verdict, and ``leaderboard.md``.

The HTML report (``tdm_r1.eval.report``) and the figures use the same formats, so a number reads
the same everywhere: 3 decimals (2 from 10 up), reported numbers with their own digits.
"""

from __future__ import annotations

from pathlib import Path

from tdm_r1.eval.formatting import arrow, fmt, fmt_ci, fmt_nfe, verdict
from tdm_r1.eval.leaderboard import Leaderboard, benchmarks_of, column, split_column
from tdm_r1.eval.provenance import markdown_details, protocol_status

TITLES = {
    "geneval": "GenEval (in-domain for GenEval-trained models)",
    "ocr": "OCR (in-domain for OCR-trained models)",
    "pickscore": "PickScore on Pick-a-Pic test prompts",
    "drawbench": "DrawBench: out-of-domain image quality",
    "toy-geneval": "Toy world GenEval",
    "toy-ocr": "Toy world OCR",
    "unspecified": "Reported metrics whose prompt set the source does not name",
}


def training_notes(lb: Leaderboard) -> list[tuple[str, str]]:
    """(model, how it was trained) for the measured RL rows whose preset is registered: the
    reward, the run and its budget (e.g. the number of binary likes) from the preset's ``sources``."""
    from tdm_r1.registry import MODELS

    out = []
    for name in sorted(set(lb.table.loc[lb.table["kind"] == "measured", "model"])):
        preset = MODELS.get(name) if name in MODELS else None
        how = getattr(preset, "sources", "")  # a runner-only preset may not say
        if preset is not None and preset.kind == "rl" and how:
            out.append((name, how))
    return out


def to_markdown(lb: Leaderboard) -> str:
    """One table per benchmark (entries with a number there), delta tables, sources."""
    source_ids = {s: i + 1 for i, s in enumerate(lb.sources)}
    lines = [
        "# Leaderboard",
        "",
        "Built by `tdmbench leaderboard` from `results/<benchmark>/<model>.csv` (kind `measured`) and "
        "`results/reference/published.csv` (kind `reported`, with numbered sources below). Measured and "
        "reported entries are never merged. ↑/↓: higher/lower is better. ★: the in-domain metric of an RL "
        "model (a reward it was trained on). Deltas are paired (same prompts and seeds): **significantly "
        "better/worse** when their paired 95% CI excludes 0; a delta whose CI includes 0 is not significant "
        "and is no win. Protocol: whether a measured row follows the protocol of the published numbers "
        "(`official`), or how it differs (`approximate: <why>`); toy-world rows are not comparable to "
        "published ones. Do not edit by hand.",
        "",
    ]
    if lb.skipped:  # --skip-broken: say what is missing, never drop a model silently
        lines += ["**Left out (unreadable results files):**", ""]
        lines += [f"- {why}" for why in lb.skipped] + [""]
    for bench in benchmarks_of(lb.metrics):
        cols = [c for c in lb.metrics if split_column(c)[0] == bench]
        rows = lb.table[lb.table[cols].notna().any(axis=1)]
        if rows.empty:
            continue
        lines += [f"## {TITLES.get(bench, bench)}", ""]
        header = [
            "model",
            "NFE",
            "kind",
            *[f"{split_column(c)[1]} {arrow(lb.higher_is_better[c])}" for c in cols],
        ]
        header += ["source", "protocol"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---", "---:", "---"] + ["---:"] * len(cols) + ["---", "---"]) + "|")
        for _, r in rows.iterrows():
            marked = set(lb.in_domain.get(r["model"], [])) if r["kind"] == "measured" else set()
            pub = r["kind"] == "reported"
            cells = [fmt(r[c], as_published=pub) + (" ★" if c in marked and fmt(r[c]) else "") for c in cols]
            src = r["source"] if r["kind"] == "measured" else f"[{source_ids[r['source']]}]"
            status = protocol_status(r, bench)
            lines.append(
                "| " + " | ".join([str(r["model"]), fmt_nfe(r["nfe"]), r["kind"], *cells, src, status]) + " |"
            )
        lines.append("")
        lines += markdown_details(rows, bench)
        d = lb.deltas[lb.deltas["benchmark"] == bench]
        if len(d):
            lines += [
                f"Deltas ({bench}): model minus reference, both measured, paired by prompt and seed; "
                "95% CI by the method named (see docs/evaluation.md).",
                "",
                "| model | minus | relation | metric | delta | 95% CI | n | method | verdict |",
                "|---|---|---|---|---:|---|---:|---|---|",
            ]
            for _, r in d.iterrows():
                rel = "few-step base" if r["relation"] == "few_step_base" else "multi-step baseline"
                col = column(bench, r["metric"])
                cells = [
                    str(r["model"]),
                    str(r["reference"]),
                    rel,
                    str(r["metric"]),
                    fmt(r["delta"], signed=True),
                    fmt_ci(r["ci_low"], r["ci_high"]),
                    str(int(r["n"])) if r["n"] else "",
                    str(r["method"]),
                    verdict(r["significant"], r["delta"], lb.higher_is_better.get(col, True), r["reason"]),
                ]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    if lb.arena:
        from tdm_r1.eval.arena_table import to_markdown as arena_markdown

        lines += [
            "## RL method arena",
            "",
            "Written by `tdmbench arena` (`results/arena/arena.md` has the curves and image grids): RL methods "
            "trained from the toy models at an equal reward-evaluation budget, each paired against its start model.",
            "",
            *arena_markdown(lb.arena, level=3),
        ]
    trained = training_notes(lb)
    if trained:
        lines += ["## How the measured RL models were trained", ""]
        lines += [f"- {name}: {how}" for name, how in trained] + [""]
    if lb.sources:
        lines += ["## Sources of reported numbers", ""]
        for s, i in source_ids.items():
            lines.append(f"{i}. {s}{' (secondary source)' if lb.sources[s] else ''}")
        lines.append("")
    return "\n".join(lines)


def write(lb: Leaderboard, root: Path | None = None) -> dict[str, Path]:
    """``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard_deltas.csv`` under ``root``."""
    from tdm_r1.eval.cache import atomic_write_text
    from tdm_r1.paths import results_dir

    root = root or results_dir()
    paths = {
        "csv": root / "leaderboard.csv",
        "md": root / "leaderboard.md",
        "deltas": root / "leaderboard_deltas.csv",
    }
    atomic_write_text(paths["csv"], lb.table.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths["md"], to_markdown(lb))
    atomic_write_text(paths["deltas"], lb.deltas.to_csv(index=False, lineterminator="\n"))
    return paths
