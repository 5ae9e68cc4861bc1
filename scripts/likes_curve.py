"""Gain from binary likes against the number of labels used (issue 15's measured runs).

For each ``runs/<name>`` trained with ``likes-sim`` (``tdmbench train --config toy-likes-sim``),
reads the scheduled evaluations ``eval/epoch-N`` and ``eval/final`` on toy-geneval, pairs each
with the committed ``toy-4step`` run (same prompts and seeds) and writes the paired delta with its
95% CI (GenEval overall: paired bootstrap over prompts) against the labels the run had used:
``results/likes/curve.{csv,md,png}``. Labels used at epoch N are counted in the run's own label
database (``likes.sqlite``: one row per label, in the order they were given).

    python scripts/likes_curve.py runs/toy-4step-r1-likes-n00 runs/toy-4step-r1-likes-n10 ...
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = "toy-geneval"


def labels_per_epoch(run: Path) -> tuple[int, int]:
    """(labels in the database, labels per epoch: rollout images x raters)."""
    c = yaml.safe_load((run / "config.yaml").read_text())
    raters = int(c["reward_options"]["likes-sim"].get("raters", 1))
    per_epoch = int(c["rollout"]["prompts_per_epoch"]) * int(c["rollout"]["group_size"]) * raters
    with sqlite3.connect(f"file:{run / 'likes.sqlite'}?mode=ro", uri=True) as db:
        total = int(db.execute("select count(*) from labels where label is not null").fetchone()[0])
    return total, per_epoch


def main() -> int:
    from tdm_r1.eval.paired import compare
    from tdm_r1.eval.results import read_values

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--reference", default="toy-4step")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "likes")
    args = ap.parse_args()
    ref = read_values(BENCH, args.reference, args.results)
    if ref is None:
        print(f"no per-sample values for {args.reference} on {BENCH} in {args.results}", file=sys.stderr)
        return 2
    rows = []
    for run in args.runs:
        name = run.name
        c = yaml.safe_load((run / "config.yaml").read_text())
        opts = c["reward_options"]["likes-sim"]
        total, per_epoch = labels_per_epoch(run)
        epochs = json.loads((run / "run.json").read_text())["epochs"]
        for folder in sorted((run / "eval").iterdir()):
            epoch = epochs if folder.name == "final" else int(folder.name.split("-")[1])
            if folder.name != "final" and epoch == epochs:
                continue  # the final evaluation is the same model
            vals = read_values(BENCH, name, folder / "results")
            summary = pd.read_csv(folder / "results" / BENCH / f"{name}.csv").set_index("metric")
            d = compare(vals, ref, "overall")
            rows.append(
                dict(
                    run=name,
                    noise=float(opts["noise"]),
                    raters=int(opts.get("raters", 1)),
                    epoch=epoch,
                    labels=min(total, epoch * per_epoch),
                    overall=float(summary.loc["overall", "mean"]),
                    delta=d.delta,
                    ci_low=d.ci_low,
                    ci_high=d.ci_high,
                    verdict=("gain" if d.delta > 0 else "loss") if d.significant else "not significant",
                )
            )
    table = pd.DataFrame(rows).sort_values(["noise", "raters", "epoch"])
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "curve.csv", index=False)
    head = (
        f"# TDM-R1 from binary likes: toy-geneval gain over {args.reference} vs labels used\n\n"
        "Simulated rater (`likes-sim`: like = toy GenEval `correct`, each answer flipped with probability "
        "`noise`), answering through the labelling app over HTTP; policy `wait` (every rollout image "
        "labelled once by each rater; with several raters the reward is the image's like rate). Delta: paired (same prompts and seeds), GenEval overall, 95% paired-bootstrap CI. "
        "Made by `python scripts/likes_curve.py`.\n\n"
    )
    (args.out / "curve.md").write_text(head + table.to_markdown(index=False, floatfmt=".4f") + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (noise, raters), part in table.groupby(["noise", "raters"]):
        x = [0, *part["labels"]]
        y = [0.0, *part["delta"]]
        lo = [0.0, *(part["delta"] - part["ci_low"])]
        hi = [0.0, *(part["ci_high"] - part["delta"])]
        ax.errorbar(
            x, y, yerr=[lo, hi], marker="o", capsize=3, label=f"label noise {noise:.0%}, {raters} rater(s)"
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("binary labels used")
    ax.set_ylabel(f"toy-geneval overall - {args.reference} (95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "curve.png", dpi=120)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
