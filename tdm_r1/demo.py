"""The main job on the embedded default: TDM-R1 on the toy world, evaluation, leaderboard.

``tdmbench demo`` = ``tdmbench train --reward ocr`` (toy-4step, 2 CPU cores) + ``tdmbench eval`` of
the toy teacher (100 NFE), the 4-step student and the new RL model on the toy suites +
``tdmbench leaderboard``. Every stage is cached or resumable: rerunning continues.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def run_demo(
    *, reward: str = "ocr", minutes: float | None = None, name: str | None = None, device: str | None = None
) -> dict[str, Any]:
    from tdm_r1.eval import leaderboard
    from tdm_r1.eval.plots import write_all
    from tdm_r1.eval.runner import evaluate
    from tdm_r1.paths import results_dir
    from tdm_r1.train.config import load_train_config
    from tdm_r1.train.trainer import Trainer

    flags: dict[str, Any] = {"max_minutes": minutes, "model.device": device}
    run_name = name or f"demo-toy-r1-{reward}"
    flags.update({"name": run_name, "register_as": run_name, "eval_benchmarks": []})
    cfg = load_train_config(f"toy-{reward}", flags=flags)
    run = Trainer(cfg).fit()
    models = ["toy-teacher", "toy-4step", run_name]
    out: dict[str, Any] = {"run": str(run), "results": {}}
    for model in models:
        for res in evaluate(model, ["toy-geneval", "toy-ocr"], batch_size=64, device=device, progress=True):
            out["results"][(model, res.benchmark)] = res.summary
    root = results_dir()
    board = leaderboard.build(root)
    out["files"] = leaderboard.write(board, root)
    write_all(board, root / "plots")
    out["leaderboard"] = board
    log.info("leaderboard written: %s", root / "leaderboard.md")
    return out
