"""The main job on the embedded default: TDM-R1 on the toy world, evaluation, leaderboard.

``tdmbench demo`` = ``tdmbench train --reward ocr`` (toy-4step, 2 CPU cores) + ``tdmbench eval`` of
the toy teacher (100 NFE), the 4-step student and the new RL model on the toy suites +
``tdmbench leaderboard``. Every stage is cached or resumable: rerunning continues.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

TOY_SUITES = ("toy-geneval", "toy-ocr")


def run_demo(
    *, reward: str = "ocr", minutes: float | None = None, name: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Train, evaluate, write the leaderboard; returns the run, results, files and per-stage seconds.

    The teacher and the 4-step student are evaluated only when ``results/`` holds no result that
    matches them (model weights, suite version and reward identities; see ``tdm_r1.eval.reuse``), so
    a fresh clone spends its time on the new model.
    """
    from tdm_r1.eval import leaderboard
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
    out["files"] = leaderboard.write(board, root)
    write_all(board, root / "plots")
    stages["leaderboard"] = time.perf_counter() - t1
    out["leaderboard"] = board
    out["stages"] = stages
    log.info("leaderboard written: %s", root / "leaderboard.md")
    return out
