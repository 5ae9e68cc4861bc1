"""The tables of one evaluated (model, benchmark): per-sample rows, the metric summary, meta.json.

The per-sample table is tidy: one row per (image, reward use), with the image's cache key and
hash, the reward's version and the score's NaN reason. The summary aggregates it per metric (mean,
std, n, 95% CI; GenEval: overall = the unweighted mean of the six task accuracies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tdm_r1 import __version__
from tdm_r1.eval.benchmark import Benchmark, RewardUse, Role
from tdm_r1.eval.cache import stable_json
from tdm_r1.eval.model import EvalModel, model_metadata
from tdm_r1.eval.reward_jobs import RewardJob

if TYPE_CHECKING:
    import pandas as pd

    from tdm_r1.eval.runner import BenchRun


def sample_rows(run: BenchRun, model: EvalModel) -> list[dict[str, Any]]:
    """This rank's per-sample rows of one benchmark (with sort keys ``_pos``, ``_use``)."""
    rows = []
    uses = run.bench.reward_uses()
    for pos in run.mine:
        item, image = run.items[pos], run.images[pos]
        for u, (role, use) in enumerate(uses):
            entry = run.scores.get((pos, use.metric))
            if entry is None:  # reward skipped as unavailable
                continue
            rows.append(
                {
                    "_pos": pos,
                    "_use": u,
                    "model": model.name,
                    "benchmark": run.bench.name,
                    "benchmark_version": run.bench.version,
                    "prompt_id": item.prompt.id,
                    "prompt": item.prompt.text,
                    "metadata": stable_json(item.prompt.metadata),
                    "sample": item.sample,
                    "seed": item.seed,
                    "image_key": image.key,
                    "image_sha256": image.sha256,
                    "reward": use.name,
                    "reward_version": entry.reward_version,
                    "reward_options": stable_json(use.options),
                    "metric": use.metric,
                    "role": role,
                    "score": entry.score,
                    "nan_reason": entry.nan_reason,
                    "details": stable_json(entry.details),
                    "tdmbench_version": __version__,
                    "model_config_hash": model.config_hash(),
                }
            )
    return rows


def run_meta(
    run: BenchRun,
    samples: pd.DataFrame,
    uses: Sequence[tuple[Role, RewardUse]],
    drop: set[str],
    jobs: Sequence[RewardJob],
    model: EvalModel,
    limit: int | None,
) -> dict[str, Any]:
    """The ``meta.json`` of one run: benchmark definition, model identity and relations, rewards."""
    from tdm_r1.registry import REWARDS

    hib = {job.name: job.higher_is_better for job in jobs}
    return {
        "tdmbench_version": __version__,
        "benchmark": run.bench.to_dict(),
        "model": {
            "name": model.name,
            "nfe": model.nfe,
            "kind": getattr(model.preset, "kind", None),
            "config": model.config(),
            "sampler": model.sampler(),
            "identity": model.image_identity(),
            "text_tokens": model.text_tokens(),
            "config_hash": model.config_hash(),
            **model_metadata(model.preset),
        },
        "rewards": [
            {
                "name": use.name,
                "metric": use.metric,
                "role": role,
                "aggregate": use.aggregate,
                "options": use.options,
                "higher_is_better": hib.get(REWARDS.canonical(use.name), True),
                "reward_versions": sorted(
                    set(samples.loc[samples["metric"] == use.metric, "reward_version"])
                ),
            }
            for role, use in uses
        ],
        "skipped_metrics": sorted(drop),
        "limit": limit,
        "n_prompts": len({it.index for it in run.items}),
        "n_images": len(run.items),
    }


def summarize(
    samples: pd.DataFrame,
    uses: Sequence[tuple[Role, RewardUse]],
    *,
    model_name: str,
    nfe: int,
    bench: Benchmark,
    config_hash: str,
) -> pd.DataFrame:
    """The summary table (``SUMMARY_COLUMNS``) of one run's per-sample table."""
    import json

    import pandas as pd

    from tdm_r1.eval.aggregate import geneval_stats, mean_ci
    from tdm_r1.eval.provenance import describe
    from tdm_r1.eval.results import SUMMARY_COLUMNS

    out = []
    for _role, use in uses:
        sub = samples[samples["metric"] == use.metric]
        versions = "|".join(sorted(set(sub["reward_version"]))) if len(sub) else ""
        found = [(use.name, v, use.options) for v in sorted(set(sub["reward_version"]))]
        protocol = describe(bench.to_dict(), found, int(sub["prompt_id"].nunique()))
        if use.aggregate == "geneval":
            correct, tags = [], []
            for score, details, metadata in zip(sub["score"], sub["details"], sub["metadata"], strict=True):
                d, m = json.loads(details), json.loads(metadata)
                correct.append(float("nan") if math.isnan(score) else float(d.get("correct", score)))
                tags.append(str(m.get("tag", d.get("tag", "unknown"))))
            stats = geneval_stats(correct, tags)
        else:
            stats = [(use.metric, mean_ci(sub["score"].to_numpy()))]
        for metric, s in stats:
            out.append(
                {
                    "model": model_name,
                    "benchmark": bench.name,
                    "metric": metric,
                    "mean": s.mean,
                    "std": s.std,
                    "n": s.n,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                    "nfe": nfe,
                    "reward": use.name,
                    "reward_version": versions,
                    "benchmark_version": bench.version,
                    "tdmbench_version": __version__,
                    "model_config_hash": config_hash,
                    "protocol": protocol.detail,
                    "protocol_status": protocol.status,
                }
            )
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))
