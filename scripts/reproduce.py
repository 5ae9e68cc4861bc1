"""Re-evaluate shipped models from scratch and compare with the committed means in ``results/``.

A reviewer's check that a number in ``results/`` is what the code gives today: every
(model, benchmark) pair is evaluated again with ``tdmbench eval`` into a scratch results folder
and an empty image / score cache (nothing reused), and each metric's mean is compared with the
committed CSV, and each per-sample value with the committed ``scores.csv``. Writes a Markdown
table (default ``results/reproduce.md``); exits 1 on a mismatch.

``--restamp``: where today's code computes another identity for a committed result (a refactor
that changed how the identity is written, not the images), re-evaluate it the same way and, when
every per-sample value is the same, replace its summary, ``meta.json`` and ``scores.csv`` with the
re-run's (which carry today's identity). Pairs that already match today's identity are skipped, so
an interrupted re-stamp resumes where it stopped.

    python scripts/reproduce.py                          # the toy world's shipped models
    python scripts/reproduce.py --model toy-4step --benchmark toy-ocr
    python scripts/reproduce.py --restamp                # re-key what a refactor re-identified
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
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


def per_sample_diff(old_dir: Path, new_dir: Path, model: str) -> float:
    """Largest |difference| of the per-sample values (``scores.csv``, keyed by prompt, sample, seed
    and metric); inf when the two files do not hold the same samples."""
    key = ["prompt_id", "sample", "seed", "metric"]
    old = pd.read_csv(old_dir / f"{model}.scores.csv").set_index(key)["value"].sort_index()
    new = pd.read_csv(new_dir / f"{model}.scores.csv").set_index(key)["value"].sort_index()
    if not old.index.equals(new.index):
        return float("inf")
    both = old.isna() & new.isna()
    return float((old - new).abs()[~both].max()) if (~both).any() else 0.0


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
    ap.add_argument(
        "--restamp", action="store_true", help="re-key results whose identity changed (see above)"
    )
    args = ap.parse_args()
    pairs = committed_pairs(args.results, args.model, args.benchmark or list(TOY_BENCHMARKS))
    if args.restamp:
        from tdm_r1.eval.reuse import reusable_result

        stale = []
        for model, bench in pairs:
            ok, why = reusable_result(model, bench, args.results)
            print(f"{model} on {bench}: {'matches today' if ok else why}", flush=True)
            if not ok:
                stale.append((model, bench))
        pairs = stale
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
            samples = per_sample_diff(args.results / bench, Path(tmp) / "results" / bench, model)
            rows.append((model, bench, "(every per-sample value)", 0.0, 0.0, samples))
            bad = write_table(rows, args, done=k, total=len(pairs))  # after each pair: nothing is lost
            if args.restamp and not len(bad[(bad["model"] == model) & (bad["benchmark"] == bench)]):
                for suffix in (".csv", ".meta.json", ".scores.csv"):
                    shutil.copyfile(
                        Path(tmp) / "results" / bench / f"{model}{suffix}",
                        args.results / bench / f"{model}{suffix}",
                    )
                print(f"re-stamped {model} on {bench}: every per-sample value is the same", flush=True)
    print("all means reproduced" if not len(bad) else bad.to_string(index=False))
    return 1 if len(bad) else 0


if __name__ == "__main__":
    raise SystemExit(main())
