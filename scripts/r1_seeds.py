"""TDM-R1 on the toy world over several training seeds, evaluated on held-out prompts along the way.

One *cell* is (reward, variant, seed): the preset ``toy-<reward>`` with the variant's settings
(``full``: TDM-R1; ``nosur``: the surrogate-reward term off, its ablation), the training seed, and
``eval_every`` so that the EMA generator is evaluated on the toy suites at a quarter, half and the
whole budget. The suites' prompts are the test split (new seeds everywhere; held-out colour x class
combinations in ``color_attr``: see docs/toyworld.md), and each evaluation is paired with the start
weights (``toy-4step``, committed results) on the same prompts and seeds.

Cells are cached: a finished cell's per-sample files are copied to
``results/r1-seeds/<tag>/<cell>/epoch-<N>/<suite>/`` and its rows to ``results/r1-seeds/<tag>/cells.csv``;
a rerun skips finished cells and resumes an interrupted one from its checkpoints. ``--summary``
pools the seeds: per (reward, variant, epoch, suite) the mean delta over seeds, each seed's delta,
a t-interval over the seed means (between-seed variance) and the pooled paired CI (per-sample
differences averaged over seeds, then paired over prompts and seeds); and full minus nosur, paired.

    python scripts/r1_seeds.py --tag lr3e-4 --reward ocr --variant full --seed 0 --set optim.lr=3.0e-4
    python scripts/r1_seeds.py --tag lr3e-4 --summary
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "r1-seeds"
SUITES = {"toy-ocr": "ocr", "toy-geneval": "overall"}
SUITES_TASK = {"toy-ocr": "ocr", "toy-geneval": "geneval"}
IN_DOMAIN = {"ocr": "toy-ocr", "geneval": "toy-geneval"}
VARIANTS = {
    "full": [],
    "nosur": ["method.surrogate_term=false"],
    # the surrogate never learns: its reward direction stays the implicit CFG push it starts as
    "fixedsur": ["optim.surrogate_lr_scale=0.0"],
}
#: Which cases of a suite RL training saw (the toy ``rl`` split, tdm_r1/toyworld/holdout.py).
SUBSETS = ("all", "seen", "unseen")
START = "toy-4step"


def cell_name(reward: str, variant: str, seed: int) -> str:
    return f"{reward}-{variant}-s{seed}"


def run_cell(args: argparse.Namespace, reward: str, variant: str, seed: int) -> None:
    """Train (or resume) one cell with ``tdmbench train``, then file its evaluations."""
    name = cell_name(reward, variant, seed)
    done = OUT / args.tag / name / "cell.json"
    if done.is_file():
        print(f"{name}: done (cached)", flush=True)
        return
    run_dir = REPO / "runs" / "r1-seeds" / args.tag / name
    sets = [
        f"seed={seed}",
        f"name=r1s-{args.tag}-{name}",
        f"output_dir={run_dir}",
        "register_as=null",
        "max_minutes=0",
        f"max_epochs={args.epochs}",
        f"eval_every={args.eval_every or args.epochs // 4}",
        "eval_benchmarks=[toy-geneval,toy-ocr]",
        f"checkpoint_every={args.epochs // 4}",
        *VARIANTS[variant],
        *args.set,
    ]
    cmd = [
        str(Path(sys.executable).parent / "tdmbench"),
        "train",
        "--config",
        f"toy-{reward}",
        "--device",
        "cpu",
    ]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    print(f"{name}: $ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=env)
    evals = sorted((run_dir / "eval").glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
    dest = OUT / args.tag / name
    for ev in evals:
        for suite in SUITES:
            src = ev / "results" / suite
            for f in src.glob("*"):
                if f.name.endswith((".csv", ".meta.json")):
                    (dest / ev.name / suite).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, dest / ev.name / suite / f.name)
    for f in ("metrics.jsonl", "curves.png"):
        if (run_dir / f).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / f, dest / f)
    meta = {
        "reward": reward,
        "variant": variant,
        "seed": seed,
        "sets": sets,
        "threads": args.threads,
        "epochs": [int(e.name.split("-")[1]) for e in evals],
    }
    done.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: filed {len(evals)} evaluations under {dest}", flush=True)


def _subset(df: pd.DataFrame, suite: str, subset: str) -> pd.DataFrame:
    """The rows of ``subset`` ("all" | "seen" | "unseen" by RL training) of a suite's values."""
    from tdm_r1.toyworld.grammar import rl_unseen_ids

    if subset == "all":
        return df
    unseen = df["prompt_id"].isin(rl_unseen_ids(SUITES_TASK[suite]))
    return df[unseen if subset == "unseen" else ~unseen]


def _values(folder: Path, subset: str = "all") -> pd.DataFrame:
    (scores,) = folder.glob("*.scores.csv")
    df = pd.read_csv(scores, dtype={"prompt_id": str, "group": str, "model_config_hash": str})
    return _subset(df, folder.name, subset)


def _start_values(suite: str, subset: str = "all") -> pd.DataFrame:
    df = pd.read_csv(
        REPO / "results" / suite / f"{START}.scores.csv",
        dtype={"prompt_id": str, "group": str, "model_config_hash": str},
    )
    return _subset(df, suite, subset)


def _seed_mean(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The per-sample values averaged over seeds (same keys in every table)."""
    key = ["prompt_id", "sample", "seed", "metric"]
    cat = pd.concat(tables)
    rest = cat.drop(columns=["value"]).drop_duplicates(key).set_index(key)
    mean = cat.groupby(key)["value"].mean()
    return rest.join(mean).reset_index()


def _t_over_seeds(x: list[float]) -> tuple[float, float]:
    from scipy import stats

    if len(x) < 2:
        return math.nan, math.nan
    m, s = float(np.mean(x)), float(np.std(x, ddof=1))
    h = float(stats.t.ppf(0.975, len(x) - 1)) * s / math.sqrt(len(x))
    return m - h, m + h


def summary(args: argparse.Namespace) -> pd.DataFrame:
    """Pool the finished cells of ``args.tag`` (see the module docstring); writes summary.{csv,md}."""
    root = OUT / args.tag
    cells = [json.loads(p.read_text()) for p in sorted(root.glob("*/cell.json"))]
    rows = []
    groups: dict[tuple, list[tuple[int, Path]]] = {}
    for c in cells:
        for ep in c["epochs"]:
            for suite in SUITES:
                folder = root / cell_name(c["reward"], c["variant"], c["seed"]) / f"epoch-{ep}" / suite
                groups.setdefault((c["reward"], c["variant"], ep, suite), []).append((c["seed"], folder))
    for (reward, variant, ep, suite), members in sorted(groups.items()):
        for subset in SUBSETS:
            rows.extend(_rows(groups, reward, variant, ep, suite, members, subset))
    table = pd.DataFrame(rows)
    table.to_csv(root / "summary.csv", index=False)
    (root / "summary.md").write_text(table.to_markdown(index=False, floatfmt="+.3f") + "\n")
    return table


def _rows(groups: dict, reward: str, variant: str, ep: int, suite: str, members: list, subset: str) -> list:
    """The summary rows of one (reward, variant, epoch, suite, subset): vs the start, and full - nosur."""
    from tdm_r1.eval.paired import compare

    rows = []
    metric = SUITES[suite]
    start = _start_values(suite, subset)
    per_seed = {s: compare(_values(f, subset), start, metric) for s, f in members}
    pooled = compare(_seed_mean([_values(f, subset) for _, f in members]), start, metric)
    deltas = [d.delta for d in per_seed.values()]
    lo, hi = _t_over_seeds(deltas)
    row = {
        "reward": reward,
        "variant": variant,
        "epoch": ep,
        "suite": suite,
        "prompts": subset,
        "domain": "in" if IN_DOMAIN[reward] == suite else "out",
        "metric": metric,
        "seeds": len(members),
        "mean_delta": float(np.mean(deltas)),
        "per_seed": " ".join(
            f"s{s}:{d.delta:+.3f}[{d.ci_low:+.3f},{d.ci_high:+.3f}]" for s, d in per_seed.items()
        ),
        "t_seeds_low": lo,
        "t_seeds_high": hi,
        "pooled_low": pooled.ci_low,
        "pooled_high": pooled.ci_high,
        "vs": START,
    }
    rows.append(row)
    if variant == "full" and (reward, "nosur", ep, suite) in groups:
        abl = dict(groups[(reward, "nosur", ep, suite)])
        common = [s for s, _ in members if s in abl]
        if common:
            full_f = dict(members)
            pair = [compare(_values(full_f[s], subset), _values(abl[s], subset), metric) for s in common]
            pooled_fa = compare(
                _seed_mean([_values(full_f[s], subset) for s in common]),
                _seed_mean([_values(abl[s], subset) for s in common]),
                metric,
            )
            lo, hi = _t_over_seeds([d.delta for d in pair])
            rows.append(
                row
                | {
                    "variant": "full-nosur",
                    "seeds": len(common),
                    "mean_delta": float(np.mean([d.delta for d in pair])),
                    "per_seed": " ".join(f"s{s}:{d.delta:+.3f}" for s, d in zip(common, pair, strict=True)),
                    "t_seeds_low": lo,
                    "t_seeds_high": hi,
                    "pooled_low": pooled_fa.ci_low,
                    "pooled_high": pooled_fa.ci_high,
                    "vs": "nosur (same seed)",
                }
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", required=True, help="experiment name (folder under results/r1-seeds)")
    ap.add_argument("--reward", action="append", choices=sorted(IN_DOMAIN), default=None)
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=None)
    ap.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], help="config override for every cell")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=0, help="default: a quarter of --epochs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (numbers depend on it)")
    ap.add_argument(
        "--summary", action="store_true", help="pool the finished cells and write summary.{csv,md}"
    )
    args = ap.parse_args()
    if args.summary:
        print(summary(args).to_string(index=False))
        return 0
    (OUT / args.tag).mkdir(parents=True, exist_ok=True)
    for reward in args.reward or sorted(IN_DOMAIN):
        for variant in args.variant or ["full", "nosur"]:
            for seed in args.seed:
                run_cell(args, reward, variant, seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
