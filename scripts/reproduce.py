"""Re-evaluate shipped models from scratch and compare with the committed means in ``results/``.

A reviewer's check that a number in ``results/`` is what the code gives today: every
(model, benchmark) pair is evaluated again with ``tdmbench eval`` into a scratch results folder
and an empty image / score cache (nothing reused), and each metric's mean is compared with the
committed CSV. Writes a Markdown table (default ``results/reproduce.md``); exits 1 on a mismatch.

    python scripts/reproduce.py                          # the toy world's shipped models
    python scripts/reproduce.py --model toy-4step --benchmark toy-ocr
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
TOY_BENCHMARKS = ("toy-geneval", "toy-ocr")


def committed_pairs(results: Path, models: list[str] | None, benchmarks: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for bench in benchmarks:
        for csv in sorted((results / bench).glob("*.csv")):
            if csv.name.endswith(".scores.csv"):
                continue
            if models is None or csv.stem in models:
                pairs.append((csv.stem, bench))
    if models is not None:  # in the order asked for (the first ones finish first)
        pairs.sort(key=lambda p: models.index(p[0]))
    return pairs


def write_table(rows: list[tuple], args: argparse.Namespace, *, done: int, total: int) -> pd.DataFrame:
    """Write the comparison so far to ``args.out``; returns the rows that differ."""
    table = pd.DataFrame(rows, columns=["model", "benchmark", "metric", "committed", "rerun", "abs_diff"])
    bad = table[~(table["abs_diff"] <= args.tolerance)]
    head = (
        f"# Reproduction of the committed results\n\n`python scripts/reproduce.py` on "
        f"{dt.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} threads, empty cache: "
        f"{done} of {total} (model, benchmark) pairs re-evaluated.\n"
        f"{len(table)} means compared, {len(bad)} differ by more than {args.tolerance:g}.\n\n"
    )
    args.out.write_text(head + table.to_markdown(index=False, floatfmt=".6f") + "\n")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", action="append", help="model (repeatable; default: all with committed toy results)"
    )
    ap.add_argument("--benchmark", action="append", help=f"benchmark (repeatable; default: {TOY_BENCHMARKS})")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "reproduce.md")
    ap.add_argument("--tolerance", type=float, default=1e-9)
    args = ap.parse_args()
    pairs = committed_pairs(args.results, args.model, args.benchmark or list(TOY_BENCHMARKS))
    if not pairs:
        print("nothing to reproduce: no committed results for that selection", file=sys.stderr)
        return 2
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="tdmbench-repro-") as tmp:
        env = dict(os.environ, TDMBENCH_CACHE=str(Path(tmp) / "cache"), HF_HUB_OFFLINE="1")
        for k, (model, bench) in enumerate(pairs, start=1):
            tdmbench = str(Path(sys.executable).parent / "tdmbench")
            cmd = [tdmbench, "eval", "--model", model, "--benchmark", bench]
            cmd += ["--results-dir", str(Path(tmp) / "results"), "--device", "cpu"]
            print(f"[{k}/{len(pairs)}] $", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, env=env, cwd=REPO)
            old = pd.read_csv(args.results / bench / f"{model}.csv").set_index("metric")["mean"]
            new = pd.read_csv(Path(tmp) / "results" / bench / f"{model}.csv").set_index("metric")["mean"]
            for metric in old.index:
                diff = abs(float(new.get(metric, float("nan"))) - float(old[metric]))
                rows.append((model, bench, metric, float(old[metric]), float(new.get(metric)), diff))
            bad = write_table(rows, args, done=k, total=len(pairs))  # after each pair: nothing is lost
    print("all means reproduced" if not len(bad) else bad.to_string(index=False))
    return 1 if len(bad) else 0


if __name__ == "__main__":
    raise SystemExit(main())
