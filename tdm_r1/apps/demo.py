"""The main job on the embedded default: TDM-R1 on the toy world, evaluation, leaderboard.

``tdmbench demo`` = ``tdmbench train --reward ocr`` (toy-4step, 2 CPU cores) + ``tdmbench eval`` of
the toy teacher (100 NFE), the 4-step student and the new RL model on the toy suites +
``tdmbench leaderboard``. Every stage is cached or resumable: rerunning continues. It ends with
what the run changed: the new model minus its start weights (toy-4step) on the same prompts and
seeds, in-domain (the trained reward's suite) and out-of-domain, with the paired 95% CI and verdict.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

TOY_SUITES = ("toy-geneval", "toy-ocr")
#: suite -> its headline metric; reward -> its in-domain suite.
HEADLINE = {"toy-geneval": "overall", "toy-ocr": "ocr"}
IN_DOMAIN = {"geneval": "toy-geneval", "ocr": "toy-ocr"}
START = "toy-4step"


def verdict(delta: object) -> str:
    """A paired delta's plain reading: better / worse when its CI excludes 0, else not significant."""
    sig = getattr(delta, "significant", None)
    if sig is None:
        return f"unpaired: {getattr(delta, 'reason', '')}"
    if not sig:
        return "not significant (the CI includes 0)"
    return "better (CI above 0)" if delta.ci_low > 0 else "worse (CI below 0)"  # type: ignore[attr-defined]


def start_to_end(run_name: str, reward: str, root: object) -> list[dict[str, object]]:
    """The new model minus its start weights on each toy suite (paired on prompts and seeds)."""
    from tdm_r1.eval.paired import compare
    from tdm_r1.eval.results import read_values

    rows = []
    for bench in sorted(TOY_SUITES, key=lambda b: b != IN_DOMAIN.get(reward)):
        new, old = read_values(bench, run_name, root), read_values(bench, START, root)
        if new is None or old is None:
            continue
        d = compare(new, old, HEADLINE[bench])
        rows.append(
            {
                "suite": bench,
                "domain": "in-domain" if bench == IN_DOMAIN.get(reward) else "out-of-domain",
                "metric": HEADLINE[bench],
                "delta": d.delta,
                "ci_low": d.ci_low,
                "ci_high": d.ci_high,
                "n": d.n,
                "verdict": verdict(d),
            }
        )
    return rows


def run_demo(
    *, reward: str = "ocr", minutes: float | None = None, name: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Train, evaluate, write the leaderboard; returns the run, results, files and per-stage seconds.

    The teacher and the 4-step student are evaluated only when ``results/`` holds no result that
    matches them (model weights, suite version and reward identities; see ``tdm_r1.eval.reuse``), so
    a fresh clone spends its time on the new model.
    """
    from tdm_r1.eval import leaderboard, leaderboard_md
    from tdm_r1.eval.plots import write_all
    from tdm_r1.eval.reuse import reusable_result
    from tdm_r1.eval.runner import evaluate
    from tdm_r1.paths import results_dir
    from tdm_r1.train.config import load_train_config
    from tdm_r1.train.trainer import Trainer

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    flags: dict[str, Any] = {"max_minutes": minutes, "model.device": device}
    run_name = name or f"demo-toy-r1-{reward}"
    flags.update({"name": run_name, "register_as": run_name, "eval_benchmarks": []})
    cfg = load_train_config(f"toy-{reward}", flags=flags)
    run = Trainer(cfg).fit()
    stages["train"] = time.perf_counter() - t0
    root = results_dir()
    out: dict[str, Any] = {"run": str(run), "results": {}, "reused": []}
    for model in ("toy-teacher", "toy-4step", run_name):
        t1 = time.perf_counter()
        todo = []
        for bench in TOY_SUITES:
            ok, why = reusable_result(model, bench, root) if model != run_name else (False, "new model")
            if ok:
                log.info("reusing %s on %s: %s", model, bench, why)
                out["reused"].append((model, bench))
            else:
                log.info("evaluating %s on %s (%s)", model, bench, why)
                todo.append(bench)
        if todo:
            # the run's model by its folder (nothing is registered); results are filed under its name
            target = run if model == run_name else model
            for res in evaluate(target, todo, batch_size=64, device=device, progress=True):
                out["results"][(model, res.benchmark)] = res.summary
        stages[f"eval {model}"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    board = leaderboard.build(root)
    out["files"] = leaderboard_md.write(board, root)
    write_all(board, root / "plots")
    stages["leaderboard"] = time.perf_counter() - t1
    out["leaderboard"] = board
    out["deltas"] = start_to_end(run_name, reward, root)
    out["stages"] = stages
    log.info("leaderboard written: %s", root / "leaderboard.md")
    return out
