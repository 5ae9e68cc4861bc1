"""OCR reward speed in the toy RL loop, old vs new engine settings -> results/perf/ocr.md.

    python benchmarks/perf/ocr_loop.py throughput --repeats 5      # reward images/s, 64 toy signs
    python benchmarks/perf/ocr_loop.py epoch --repeats 3 --epochs 2 # toy-ocr RL epoch time
    python benchmarks/perf/ocr_loop.py agree --folders DIR ...      # same reads? (toy renders + folders)

Variants (reward options of ``ocr``):

* ``old``: RapidOCR's own detection size rule (every image scaled up to a 736-px shorter side),
  ``workers=1, threads=1`` (the toy-ocr preset before the change);
* ``new``: PaddleOCR 2.x's rule (no upscaling below 960 px, the reward's default now), same workers;
* ``new-pool``: ``new`` with the default pool (one worker per usable core, one thread each).

The machine is shared, so the variants run interleaved (old, new, new-pool, old, ...) and the
tables report medians. Each subcommand stores its figures in ``results/perf/ocr.json`` and the
Markdown is rebuilt from everything stored there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.perf.rewards import _toy_batch, machine  # noqa: E402

OLD = {"det_limit_side_len": 736, "det_limit_type": "min"}
VARIANTS: dict[str, dict[str, Any]] = {
    "old": {**OLD, "workers": 1, "threads": 1},
    "new": {"workers": 1, "threads": 1},
    "new-pool": {},
}


# -------------------------------------------------------------------------------- throughput
def throughput(repeats: int, n: int) -> dict[str, Any]:
    from tdm_r1.rewards.ocr import OcrReward

    images, prompts, metas = _toy_batch("ocr", n)
    rewards = {name: OcrReward(**opts) for name, opts in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    scores: dict[str, float] = {}
    try:
        for name, r in rewards.items():  # warm-up: pool start, first session runs
            scores[name] = float(r(images=images, prompts=prompts, metadata=metas).scores.mean())
        for _ in range(repeats):
            for name, r in rewards.items():
                t0 = time.perf_counter()
                r(images=images, prompts=prompts, metadata=metas)
                times[name].append(time.perf_counter() - t0)
    finally:
        for r in rewards.values():
            r.close()
    rows = []
    for name in VARIANTS:
        med = statistics.median(times[name])
        rows.append(
            {
                "variant": name,
                "options": json.dumps(VARIANTS[name]) if VARIANTS[name] else "(defaults)",
                "workers x threads": f"{rewards[name].workers} x {rewards[name].threads}",
                "images": n,
                "median s": round(med, 3),
                "images/s": round(n / med, 1),
                "mean score": round(scores[name], 4),
                "all s": [round(t, 2) for t in times[name]],
            }
        )
    return {"rows": rows, "repeats": repeats}


# ------------------------------------------------------------------------------------- epoch
def _train(variant: str, epochs: int, workdir: Path) -> list[float]:
    out = workdir / variant
    cmd = [
        str(Path(sys.executable).parent / "tdmbench"),
        "train",
        "--config",
        "toy-ocr",
        "--max-epochs",
        str(epochs),
        "--device",
        "cpu",
        "--set",
        f"name=perf-ocr-{variant}",
        "--set",
        f"output_dir={out}",
        "--set",
        "trackers=[]",
        "--set",
        "eval_benchmarks=[]",
        "--set",
        "register_as=null",
        "--set",
        f"reward_options={json.dumps({'ocr': VARIANTS[variant]})}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [float(m["time_epoch_s"]) for m in metrics if "time_epoch_s" in m]


def epoch(repeats: int, epochs: int, variants: list[str]) -> dict[str, Any]:
    per: dict[str, list[list[float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="perf-ocr-") as tmp:
        for r in range(repeats):
            for v in variants:
                run_dir = Path(tmp) / f"r{r}"
                per[v].append(_train(v, epochs, run_dir))
                print(v, r, per[v][-1], flush=True)
    rows = []
    for v in variants:
        flat = [t for run in per[v] for t in run]
        later = [t for run in per[v] for t in run[1:]]
        rows.append(
            {
                "variant": v,
                "options": json.dumps(VARIANTS[v]) if VARIANTS[v] else "(defaults)",
                "runs x epochs": f"{repeats} x {epochs}",
                "median epoch s": round(statistics.median(flat), 2),
                "median epoch s (epochs 2+)": round(statistics.median(later), 2) if later else None,
                "all s": [[round(t, 1) for t in run] for run in per[v]],
            }
        )
    return {"rows": rows}


# ------------------------------------------------------------------------------------- agree
def _lines_text(out: Any) -> list[str]:
    return [str(t) for t in out.details["recognized"]]


def agree(folders: list[Path], n_renders: int, per_folder: int) -> dict[str, Any]:
    """Do the old and new settings read the same strings (and are the confidences close)?"""
    import numpy as np
    import torch
    from PIL import Image

    from tdm_r1.ocr_engines import RapidOcrEngine
    from tdm_r1.toyworld.grammar import task_prompts
    from tdm_r1.toyworld.render import render

    sets: dict[str, list[np.ndarray]] = {}
    rng = np.random.default_rng(123)
    cases = task_prompts("text", "train") + task_prompts("text", "test")
    sets[f"toy renders ({n_renders}, 64 px)"] = [
        render(cases[i % len(cases)], rng)[0] for i in range(n_renders)
    ]
    for folder in folders:
        files = sorted(folder.glob("*.png"))[:per_folder]
        sets[f"{folder.name} ({len(files)} generated)"] = [
            np.asarray(Image.open(f).convert("RGB")) for f in files
        ]
    old = RapidOcrEngine(threads=1, **OLD)
    new = RapidOcrEngine(threads=1)
    rows = []
    for name, ims in sets.items():
        a = [old.read(im) for im in ims]
        b = [new.read(im) for im in ims]
        same_text = sum(
            "".join(t for t, _ in u) == "".join(t for t, _ in v) for u, v in zip(a, b, strict=True)
        )
        same_lines = sum([t for t, _ in u] == [t for t, _ in v] for u, v in zip(a, b, strict=True))
        dconf = [
            abs(x[1] - y[1])
            for u, v in zip(a, b, strict=True)
            if len(u) == len(v)
            for x, y in zip(u, v, strict=True)
        ]
        diffs = [
            ("".join(t for t, _ in u), "".join(t for t, _ in v))
            for u, v in zip(a, b, strict=True)
            if [t for t, _ in u] != [t for t, _ in v]
        ]
        rows.append(
            {
                "images": name,
                "size": f"{ims[0].shape[1]}x{ims[0].shape[0]}",
                "with text (old)": sum(bool(u) for u in a),
                "same string": f"{same_text}/{len(ims)}",
                "same lines": f"{same_lines}/{len(ims)}",
                "max |conf diff|": round(max(dconf, default=0.0), 4),
                "median |conf diff|": round(statistics.median(dconf), 4) if dconf else 0.0,
                "differences (old -> new)": "; ".join(f"{x!r} -> {y!r}" for x, y in diffs[:6]),
            }
        )
        print(rows[-1], flush=True)
    del torch
    return {"rows": rows}


# ---------------------------------------------------------------------------------- markdown
def render_md(store: dict[str, Any]) -> str:
    from tabulate import tabulate

    lines = [
        "# OCR reward speed in the toy RL loop",
        "",
        "Written by `python benchmarks/perf/ocr_loop.py`.",
        "",
    ]
    lines += ["Variants (options of the `ocr` reward):", ""]
    lines += [f"- `{k}`: {json.dumps(v) if v else '(the defaults)'}" for k, v in VARIANTS.items()]
    lines += [""]
    titles = {
        "throughput": "Reward throughput on toy signs (64x64)",
        "epoch": "Toy RL epoch (`tdmbench train --config toy-ocr`, CPU), `time_epoch_s` from metrics.jsonl",
        "agree": "Same reads? Old vs new detection settings (RapidOCR, text per image)",
    }
    for key, title in titles.items():
        if key not in store:
            continue
        sec = store[key]
        lines += [f"## {title}", ""]
        lines += [f"- {k}: {v}" for k, v in sec["machine"].items()]
        lines += ["", tabulate(sec["rows"], headers="keys", tablefmt="github"), ""]
    lines += [
        "Medians over interleaved repeats; the machine is shared (see the load average), so compare",
        "variants within one table, not across tables or days.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["throughput", "epoch", "agree", "md"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", default="old,new,new-pool")
    parser.add_argument("--renders", type=int, default=200)
    parser.add_argument("--folders", type=Path, nargs="*", default=[], help="folders of generated PNGs")
    parser.add_argument("--per-folder", type=int, default=64, help="images read from each folder")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "ocr.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TDMBENCH_DATA_DIR", str(REPO.parent / "shared" / "data"))
    store_path = args.out.with_suffix(".json")
    info = {**machine(), "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    store: dict[str, Any] = {}
    if args.what == "throughput":
        store["throughput"] = {**throughput(args.repeats, args.images), "machine": info}
    elif args.what == "epoch":
        store["epoch"] = {**epoch(args.repeats, args.epochs, args.variants.split(",")), "machine": info}
    elif args.what == "agree":
        store["agree"] = {**agree(args.folders, args.renders, args.per_folder), "machine": info}
    # re-read just before writing: another subcommand may have stored its section meanwhile
    store = {**(json.loads(store_path.read_text()) if store_path.is_file() else {}), **store}
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store_path.write_text(json.dumps(store, indent=1) + "\n")
    args.out.write_text(render_md(store), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
