"""Evaluation runner speed: generation and scoring images/s, and the re-run-from-cache speed-up.

Runs ``tdm_r1.eval.runner.evaluate`` twice on a fresh cache and results folder: the first run
generates and scores everything, the second must find everything cached (target: at least 20x
faster). Writes ``results/perf/eval.md``.

    python benchmarks/perf/eval.py                               # toy-4step on toy-geneval + toy-ocr
    python benchmarks/perf/eval.py --model toy-4step --benchmark toy-ocr --limit 50
    python benchmarks/perf/eval.py --kit                         # the test kit (tdm_r1/testing/evalkit.py)

``--kit`` measures the runner on the tests' synthetic model and rewards (microseconds of work per
image), i.e. the runner's own overhead; the toy suites give the figures that matter.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=None, help="model preset (default: toy-4step, or kit-r1 with --kit)"
    )
    parser.add_argument(
        "--benchmark", action="append", default=None, help="repeatable (default: the toy suites)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N prompts of each benchmark")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--kit", action="store_true", help="use the tests' synthetic model and rewards")
    parser.add_argument("--kit-prompts", type=int, default=300, help="prompts per kit suite (--kit)")
    parser.add_argument("--plugin", action="append", default=[], help="module:function registering models")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "eval.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from tdm_r1.plugins import load_plugins

    if args.kit:
        args.plugin.append("tdm_r1.testing.evalkit:register")
        model = args.model or "kit-r1"
        benchmarks = args.benchmark or ["kit-geneval", "kit-bright"]
    else:
        model = args.model or "toy-4step"
        benchmarks = args.benchmark or ["toy-geneval", "toy-ocr"]
    load_plugins(args.plugin)
    if args.kit:
        from tdm_r1.registry import BENCHMARKS
        from tdm_r1.testing.evalkit import kit_benchmarks

        for bench in kit_benchmarks():  # the same suites, scaled up
            bench.prompts.args["n"] = args.kit_prompts
            BENCHMARKS.add(bench.name, bench)

    import torch

    from tdm_r1.eval.runner import evaluate
    from tdm_r1.registry import MODELS

    cheap_identity = callable(getattr(MODELS.get(model), "config_dict", None))

    with tempfile.TemporaryDirectory(prefix="tdmbench-perf-") as tmp:
        os.environ["TDMBENCH_CACHE"] = str(Path(tmp) / "cache")
        results = Path(tmp) / "results"
        # Warm-up on one prompt in a separate cache: pays the one-time imports, so that the two
        # measured runs compare work, not import time.
        evaluate(
            model,
            benchmarks,
            limit=1,
            results_root=Path(tmp) / "warm-results",
            cache_root=Path(tmp) / "warm-cache",
            progress=False,
        )
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            res = evaluate(
                model, benchmarks, limit=args.limit, batch_size=args.batch_size, results_root=results
            )
            runs.append((time.perf_counter() - t0, res[0].stats))
    (first_s, first), (second_s, second) = runs
    if second.images_generated or second.scores_computed:
        raise SystemExit(f"the second run did work: {second}")

    overhead = first_s - first.generate_seconds - first.score_seconds

    def rate(n: int, s: float) -> str:
        return f"{n / s:.1f}" if s > 0 else "n/a"

    lines = [
        "# Evaluation runner speed",
        "",
        "Command: `" + " ".join(["python benchmarks/perf/eval.py", *sys.argv[1:]]) + "`",
        "",
        f"- model `{model}`, benchmarks {', '.join(f'`{b}`' for b in benchmarks)}, "
        f"limit {args.limit}, batch size {args.batch_size}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, python {platform.python_version()}",
        f"- work: {first.items} images, {first.scores_computed} (image, reward) scores",
        "",
        "| | seconds | images/s |",
        "| --- | ---: | ---: |",
        f"| generation (inside `generate`) | {first.generate_seconds:.2f} | "
        f"{rate(first.images_generated, first.generate_seconds)} |",
        f"| scoring (inside reward calls) | {first.score_seconds:.2f} | "
        f"{rate(first.scores_computed, first.score_seconds)} (scores/s) |",
        f"| first run, end to end | {first_s:.2f} | {rate(first.items, first_s)} |",
        f"| first run outside `generate` and rewards (runner: cache files, PNG, tables) | {overhead:.2f} | "
        f"{rate(first.items, overhead)} |",
        f"| second run (all cached) | {second_s:.2f} | {rate(second.items, second_s)} |",
        "",
        f"Re-run from cache: **{first_s / second_s:.1f}x** faster than the first run (target: 20x). "
        "The second run generated 0 images and computed 0 scores.",
        "",
        "End-to-end times exclude Python start-up and imports (a one-prompt warm-up run on another "
        "cache pays them first); the first run includes loading the "
        "model and the rewards; the second loads no reward and "
        + (
            "no model (its identity comes from `preset.config_dict()`)."
            if cheap_identity
            else "loads the model only for its identity (the preset has no `config_dict()`)."
        ),
        "",
    ]
    if args.kit:
        lines += [
            "The kit's generator and rewards take microseconds per image, so this ratio is the floor set "
            "by the runner's own bookkeeping (two small files per image, the PNG and its sidecar, and one per score; creating a "
            "file cost about 1 ms on this machine's shared disk). Real generation and scoring lengthen "
            "the first run and leave the re-run as it is: rerun on the toy suites for the real figure.",
            "",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
