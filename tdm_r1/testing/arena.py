"""Arena table rows with chosen gains, for tests of the pooled statistics and their rendering."""

from __future__ import annotations

from typing import Any

from tdm_r1.apps.arena.grid import ARENA_VERSION, SUITES, Cell


def arena_rows(
    method: str,
    gains: list[float],
    *,
    model: str = "toy-4step",
    reward: str = "ocr",
    budget: int = 128,
    per_epoch: int = 64,
) -> list[dict[str, Any]]:
    """Rows of ``results/arena/<reward>.csv`` for one cell: seed ``i`` has full-budget in-domain gain
    ``gains[i]`` (start 0.5), half of it at the half-budget checkpoint; seen / unseen gains are
    0.02 above / below; out-of-domain -0.01. Each row's paired CI is its gain +- 0.05."""
    epochs = budget // per_epoch
    (in_suite, in_metric), (ood_suite, ood_metric) = SUITES[reward]
    rows = []
    for seed, g in enumerate(gains):
        cell = Cell(method, model, reward, seed)
        for epoch, share in ((epochs // 2, 0.5), (epochs, 1.0)):
            evals = epoch * per_epoch
            row: dict[str, Any] = {
                "reward": reward,
                "method": method,
                "model": model,
                "seed": seed,
                "run": cell.run_name,
                "checkpoint": cell.checkpoint_name(evals),
                "status": "ok",
                "error": "",
                "budget": budget,
                "epochs": epochs,
                "epoch": epoch,
                "reward_evals": evals,
                "train_images": evals,
                "nfe": 4,
                "start_model": model,
                "start_nfe": 4,
                "in_suite": in_suite,
                "in_metric": in_metric,
                "ood_suite": ood_suite,
                "ood_metric": ood_metric,
                "wall_clock_s": 2.0 * epoch,
                "rollout_s": 1.0 * epoch,
                "peak_mem_mb": 900.0,
                "device": "cpu x1 threads",
                "config_hash": "h",
                "arena_version": ARENA_VERSION,
            }
            for pre, d in (
                ("in_", g),
                ("in_seen_", g + 0.02),
                ("in_unseen_", g - 0.02),
                ("ood_", -0.01 / share),
            ):
                d *= share
                row |= {
                    f"{pre}start": 0.5,
                    f"{pre}value": 0.5 + d,
                    f"{pre}delta": d,
                    f"{pre}ci_low": d - 0.05,
                    f"{pre}ci_high": d + 0.05,
                    f"{pre}significant": abs(d) > 0.05,
                }
            rows.append(row)
    return rows
