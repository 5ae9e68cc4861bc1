"""Gain from binary likes against the number of labels used (issue 15's measured runs).

For each ``runs/<name>`` trained with ``likes-sim`` (``tdmbench train --config toy-likes-sim`` or
``toy-likes-sim-ocr``), reads the scheduled evaluations ``eval/epoch-N`` and ``eval/final`` on the
benchmark of the rater's base reward (toy GenEval correctness -> toy-geneval ``overall``, OCR ->
toy-ocr ``ocr``), pairs each with the committed ``toy-4step`` run (same prompts and seeds) and with
the control (the same base's TDM-R1 run with the surrogate-reward term off, whose generator does
not depend on the reward: ``docs/likes.md``), and writes the paired deltas with their 95% CIs
(GenEval overall: paired bootstrap over prompts; OCR: paired t) against the labels the run had used:
``results/likes/curve.{csv,md,png}``. Labels used at epoch N are counted in the run's own label
database (``likes.sqlite``: one row per label, in the order they were given). ``changes`` lists the
run's method settings that differ from its preset; the control column is left empty when one of
them changes the generator's TDM terms (then the control is not the same generator).

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
#: base reward of the rater -> (benchmark, metric, preset, control model: surrogate term off)
BASES = {
    "geneval": ("toy-geneval", "overall", "toy-likes-sim", "toy-4step-r1-geneval-nosur"),
    "ocr": ("toy-ocr", "ocr", "toy-likes-sim-ocr", "toy-4step-r1-ocr-nosur"),
}
#: Epochs of the control runs (and of the presets).
CONTROL_EPOCHS = 100
#: Settings that only the surrogate (or the reward term) sees: with the term off they do not touch
#: the generator, so the control stays the same generator when a run changes them.
SURROGATE_ONLY = {
    f"method.{k}"
    for k in ("beta_dpo", "anchor_beta", "clip_range", "rl_cfg", "t_min_dgpo_reward", "reference")
} | {"optim.surrogate_lr_scale", "optim.surrogate_betas"}
#: Settings that name or watch a run without changing what it trains.
NOT_TRAINING = (
    "name",
    "register_as",
    "output_dir",
    "rewards",
    "reward_options",
    "eval_",
    "trackers",
    "checkpoint",
)


def recipe_changes(run: Path, preset: str) -> dict[str, object]:
    """The run's training settings (dotted keys) that differ from ``preset``'s (the run's config is
    resolved by today's code: fields added since it ran take their defaults, as they did then)."""
    from tdm_r1.config import to_dict
    from tdm_r1.train.config import load_train_config
    from tdm_r1.train.resume import config_differences

    resolved = to_dict(load_train_config(run / "config.yaml"))
    diffs = config_differences(to_dict(load_train_config(preset)), resolved)
    return {k: new for k, _, new in diffs if not k.startswith(NOT_TRAINING)}


def labels_per_epoch(run: Path, c: dict) -> tuple[int, int]:
    """(labels in the run's database, labels per epoch: rollout images x raters); ``c`` is its config."""
    raters = int(c["reward_options"]["likes-sim"].get("raters", 1))
    per_epoch = int(c["rollout"]["prompts_per_epoch"]) * int(c["rollout"]["group_size"]) * raters
    with sqlite3.connect(f"file:{run / 'likes.sqlite'}?mode=ro", uri=True) as db:
        total = int(db.execute("select count(*) from labels where label is not null").fetchone()[0])
    return total, per_epoch


def _verdict(d) -> str:
    return ("gain" if d.delta > 0 else "loss") if d.significant else "not significant"


def main() -> int:
    from tdm_r1.eval.paired import compare
    from tdm_r1.eval.results import read_values

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--reference", default="toy-4step")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "likes")
    args = ap.parse_args()
    rows = []
    for run in args.runs:
        name = run.name
        c = yaml.safe_load((run / "config.yaml").read_text())
        opts = c["reward_options"]["likes-sim"]
        bench, metric, preset, control = BASES[opts.get("base", "geneval")]
        ref = read_values(bench, args.reference, args.results)
        ctl = read_values(bench, control, args.results)
        if ref is None or ctl is None:
            print(
                f"no per-sample values for {args.reference} / {control} on {bench} in {args.results}",
                file=sys.stderr,
            )
            return 2
        changes = recipe_changes(run, preset)
        # the control ran the preset for its 100 epochs: only a run with the same generator settings,
        # at that epoch, is paired with it
        same_generator = set(changes) - {"max_epochs"} <= SURROGATE_ONLY
        total, per_epoch = labels_per_epoch(run, c)
        epochs = json.loads((run / "run.json").read_text())["epochs"]
        for folder in sorted((run / "eval").iterdir()):
            epoch = epochs if folder.name == "final" else int(folder.name.split("-")[1])
            if folder.name != "final" and epoch == epochs:
                continue  # the final evaluation is the same model
            vals = read_values(bench, name, folder / "results")
            summary = pd.read_csv(folder / "results" / bench / f"{name}.csv").set_index("metric")
            d = compare(vals, ref, metric)
            k = compare(vals, ctl, metric) if same_generator and epoch == CONTROL_EPOCHS else None
            rows.append(
                dict(
                    run=name,
                    benchmark=bench,
                    noise=float(opts["noise"]),
                    raters=int(opts.get("raters", 1)),
                    changes=", ".join(f"{a}={b}" for a, b in changes.items()),
                    epoch=epoch,
                    labels=min(total, epoch * per_epoch),
                    value=float(summary.loc[metric, "mean"]),
                    delta=d.delta,
                    ci_low=d.ci_low,
                    ci_high=d.ci_high,
                    verdict=_verdict(d),
                    vs_control=k.delta if k else float("nan"),
                    control_ci_low=k.ci_low if k else float("nan"),
                    control_ci_high=k.ci_high if k else float("nan"),
                    control_verdict=_verdict(k) if k else "",
                )
            )
    table = pd.DataFrame(rows).sort_values(["benchmark", "noise", "raters", "run", "epoch"], kind="stable")
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "curve.csv", index=False)
    head = (
        f"# TDM-R1 from binary likes: gain over {args.reference} vs labels used\n\n"
        "Simulated rater (`likes-sim`): like = toy GenEval `correct` (toy-geneval rows) or toy OCR reading "
        "the text right (toy-ocr rows), each answer flipped with probability `noise`, answering through the "
        "labelling app over HTTP; policy `wait` (every rollout image labelled once by each rater; with "
        "several raters the reward is the image's like rate). `delta`: paired (same prompts and seeds) vs "
        f"{args.reference}, 95% CI (GenEval overall: paired bootstrap over prompts; OCR: paired t). "
        "`vs_control`: paired vs the same base's TDM-R1 run with the surrogate-reward term off, which "
        "trains the same generator whatever the reward (toy-4step-r1-geneval-nosur, toy-4step-r1-ocr-nosur): "
        "what the likes add. `changes`: method settings that differ from the preset. "
        "Made by `python scripts/likes_curve.py`.\n\n"
    )
    (args.out / "curve.md").write_text(head + table.to_markdown(index=False, floatfmt=".4f") + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(dict.fromkeys(table["benchmark"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(6.5 * len(benches), 4.5), squeeze=False)
    for ax, bench in zip(axes[0], benches, strict=True):
        for run, part in table[table["benchmark"] == bench].groupby("run", sort=False):
            x = [0, *part["labels"]]
            y = [0.0, *part["delta"]]
            lo = [0.0, *(part["delta"] - part["ci_low"])]
            hi = [0.0, *(part["ci_high"] - part["delta"])]
            first = part.iloc[0]
            label = (
                f"{run.removeprefix('toy-4step-r1-')}: noise {first['noise']:.0%}, {first['raters']} rater(s)"
            )
            ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("binary labels used")
        ax.set_ylabel(
            f"{bench} {BASES['ocr' if bench == 'toy-ocr' else 'geneval'][1]} - {args.reference} (95% CI)"
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "curve.png", dpi=120)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
