"""The evaluation runner: generate -> score -> aggregate -> ``results/``.

One call evaluates one model on one or more benchmarks, in three phases:

1. **generate** every image of every benchmark that is not in the image cache (the model is
   loaded only if something is missing, and released afterwards);
2. **score** with one reward at a time (each loaded only if one of its scores is missing, and
   released before the next), so that a large generator and several reward models never have to
   fit in memory together;
3. **aggregate** on the main process and write ``results/<benchmark>/<model>.{csv,meta.json,
   samples.parquet}``.

Every image and score is cached (``tdm_r1.eval.cache``) as soon as it exists, so a second run of
the same command neither generates nor scores, and a killed run resumes where it stopped.

Several processes (``tdmbench eval --num-processes N`` or ``accelerate launch``) split the work
items (prompt x seed) by stride, ``items[rank::world]``: no item is padded or duplicated. Each
rank fills the cache with its own items; the rows are gathered to rank 0, sorted into the
one-process order and aggregated there, so the result files are the same for any process count.
Multi-node runs only need the results folder on rank 0 (the cache may be node-local).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdm_r1 import __version__
from tdm_r1.errors import ConfigError, MissingExtraError, MissingWeightsError, ShapeError, UnknownNameError
from tdm_r1.eval.benchmark import Benchmark, RewardUse, Role, WorkItem
from tdm_r1.eval.cache import CachedImage, ImageCache, ScoreCache, ScoreEntry, stable_json

if TYPE_CHECKING:
    import pandas as pd

    from tdm_r1.eval.results import RunFiles

log = logging.getLogger(__name__)

#: Optional preset / run-metadata fields the leaderboard uses (see ``model_metadata``).
RELATION_FIELDS: tuple[str, ...] = ("few_step_base", "baseline", "in_domain")


@dataclass
class RunStats:
    """What one run did (summed over processes). Times are wall-clock seconds of rank 0's view."""

    items: int = 0
    generate_calls: int = 0
    images_generated: int = 0
    image_hits: int = 0
    reward_calls: int = 0
    scores_computed: int = 0
    score_hits: int = 0
    generate_seconds: float = 0.0
    score_seconds: float = 0.0

    def add(self, other: RunStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class EvalResult:
    """One (model, benchmark) run: the tidy per-sample table and the metric summary."""

    model: str
    benchmark: str
    summary: pd.DataFrame
    samples: pd.DataFrame
    meta: dict[str, Any]
    files: RunFiles | None
    stats: RunStats = field(default_factory=RunStats)


def _batched(seq: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(seq), size):
        yield list(seq[start : start + size])


# ----------------------------------------------------------------------------------------- model
def model_metadata(preset: Any) -> dict[str, Any]:
    """Leaderboard relations of a preset: its few-step base, its multi-step baseline, and the
    rewards it was RL-trained on (``in_domain``). Each is an optional preset attribute; a saved
    training run sets them in the preset it registers."""
    out: dict[str, Any] = {}
    for name in RELATION_FIELDS:
        value = getattr(preset, name, None)
        if name == "in_domain" and value is not None:
            value = [value] if isinstance(value, str) else list(value)
        out[name] = value
    return out


class _Model:
    """A preset whose adapter is loaded only when an image is missing from the cache."""

    def __init__(self, name: str, preset: Any, device: Any) -> None:
        self.name = name
        self.preset = preset
        self.device = device
        self._adapter: Any = None
        self._config: dict[str, Any] | None = None
        self._identity: str | None = None

    @property
    def nfe(self) -> int:
        return int(self.preset.nfe)

    def sampler(self) -> dict[str, Any]:
        return {k: getattr(self.preset, k, None) for k in ("steps", "guidance", "height", "width")}

    def config(self) -> dict[str, Any]:
        """The model's identity for the image cache key.

        ``preset.config_dict()`` when the preset offers it (no weights are loaded, so a fully
        cached re-run never touches the model), else the loaded adapter's ``config_dict()``.
        """
        if self._config is None:
            fn = getattr(self.preset, "config_dict", None)
            self._config = dict(fn()) if callable(fn) else dict(self.adapter().config_dict())
        return self._config

    def identity(self) -> str:
        """sha256 of config + sampler settings: the model part of every image key."""
        if self._identity is None:
            self._identity = ImageCache.model_identity(self.config(), self.sampler())
        return self._identity

    def config_hash(self) -> str:
        return self.identity()[:16]

    def adapter(self) -> Any:
        if self._adapter is None:
            log.info("loading model %s on %s", self.name, self.device)
            self._adapter = self.preset.load(device=self.device)
        return self._adapter

    def release(self) -> None:
        if self._adapter is not None:
            self._adapter = None
            _free_memory(self.device)


def _free_memory(device: Any) -> None:
    """Return a released model's accelerator memory (a full ``gc`` pass costs ~0.2 s, so only
    where it matters: on the CPU, reference counting has already freed the weights)."""
    import torch

    if torch.device(device).type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------- rewards
@dataclass
class _RewardJob:
    """One reward with one set of options, scoring every benchmark that uses it."""

    name: str  # canonical registry name
    cls: Any
    options: dict[str, Any]
    optional: bool
    uses: list[tuple[str, RewardUse]] = field(default_factory=list)  # (benchmark, use)

    @property
    def key_identity(self) -> str:
        """Reward identity in score keys, known without building the reward: the class version, or
        ``cls.key_version(options)`` where the identity depends on more than the options (files)."""
        key_version = getattr(self.cls, "key_version", None)
        version = key_version(self.options) if callable(key_version) else getattr(self.cls, "version", "")
        return f"{self.name}@{version}"

    @property
    def higher_is_better(self) -> bool:
        return bool(getattr(self.cls, "higher_is_better", True))

    def build(self, device: Any) -> Any:
        from tdm_r1.rewards.base import build_reward

        return build_reward({self.name: 1.0}, options={self.name: dict(self.options)}, device=device)


def _plan_rewards(
    benches: Sequence[Benchmark], cli_options: dict[str, dict[str, Any]]
) -> tuple[list[_RewardJob], set[tuple[str, str]]]:
    """Distinct (reward, options) jobs; and the (benchmark, metric) uses skipped as unavailable."""
    from tdm_r1.registry import REWARDS

    cli = {REWARDS.canonical(k): v for k, v in cli_options.items()}
    used = {REWARDS.canonical(u.name) for b in benches for _, u in b.reward_uses() if u.name in REWARDS}
    unused = sorted(set(cli) - used)
    if unused:
        raise ConfigError(
            f"--reward-option given for {unused}, which no selected benchmark uses "
            f"(they use: {', '.join(sorted(used))})"
        )
    jobs: dict[tuple[str, str], _RewardJob] = {}
    skipped: set[tuple[str, str]] = set()
    for bench in benches:
        for _role, use in bench.reward_uses():
            try:
                name = REWARDS.canonical(use.name)
            except UnknownNameError:
                if not use.optional:
                    raise
                log.warning("optional reward %r is not registered; %s skips it", use.name, bench.name)
                skipped.add((bench.name, use.metric))
                continue
            options = {**use.options, **cli.get(name, {})}
            key = (name, stable_json(options))
            if key not in jobs:
                jobs[key] = _RewardJob(name, REWARDS.get(name), options, use.optional)
            jobs[key].optional = jobs[key].optional and use.optional
            jobs[key].uses.append((bench.name, use))
    return list(jobs.values()), skipped


def _check_reward_weights(jobs: Sequence[_RewardJob]) -> None:
    """Resolve every weight file of every required reward (local option, env var, HF cache, or a
    download when online); raises :class:`MissingWeightsError` naming how to provide it."""
    from tdm_r1.weights import resolve

    for job in jobs:
        if job.optional:
            continue
        needed = getattr(job.cls, "required_weights", None)
        files = needed(job.options) if callable(needed) else getattr(job.cls, "weight_files", ())
        for wf in files:
            # "--reward-option geneval.detector_path" -> the reward's "detector_path" option
            option = wf.option.rsplit(" ", 1)[-1].split(".", 1)[-1] if "." in wf.option else None
            resolve(wf, job.options.get(option) if option else None)


# ------------------------------------------------------------------------------------------- run
@dataclass
class _BenchRun:
    bench: Benchmark
    items: list[WorkItem]  # all items, in the one-process order
    mine: list[int]  # positions in ``items`` that this rank handles
    images: dict[int, CachedImage] = field(default_factory=dict)
    scores: dict[tuple[int, str], ScoreEntry] = field(default_factory=dict)  # (pos, metric)


def evaluate(
    model: str,
    benchmarks: Sequence[str | Benchmark] | None = None,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    reward_options: dict[str, dict[str, Any]] | None = None,
    results_root: Path | None = None,
    cache_root: Path | None = None,
    write: bool = True,
    progress: bool = True,
) -> list[EvalResult]:
    """Evaluate model ``model`` (a registered name, run folder, preset JSON or pipeline folder,
    see :func:`tdm_r1.models.base.resolve_model`) on ``benchmarks`` (default: the preset's
    ``benchmarks`` attribute, else the four official suites).

    Args:
        limit: keep the first ``limit`` prompts of each benchmark.
        batch_size: images per ``generate`` call and per reward call.
        device: torch device; default the process's accelerate device.
        reward_options: ``{reward: {option: value}}`` on top of the benchmark's options.
        results_root: default ``tdm_r1.paths.results_dir()``; ``cache_root``: default
            ``<cache_dir()>/eval``.
        write: write ``results/`` files (rank 0).

    Returns:
        One :class:`EvalResult` per benchmark on the main process; ``[]`` on other ranks.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from tdm_r1.registry import BENCHMARKS, MODELS

    if batch_size < 1:
        raise ShapeError(f"batch_size must be >= 1, got {batch_size}")
    # Resolve every name and read every prompt file before any model is loaded: typos and
    # missing data fail within a second.
    from tdm_r1.models.base import resolve_model

    if model in MODELS:
        model_name = MODELS.canonical(model)
        preset = MODELS.get(model_name)
    else:  # a run folder, preset JSON, pipeline folder or finished run's name, as `generate` takes
        preset = resolve_model(model)
        model_name = preset.name
    if not benchmarks:
        benchmarks = list(getattr(preset, "benchmarks", None) or ("geneval", "ocr", "pickscore", "drawbench"))
    benches = [b if isinstance(b, Benchmark) else BENCHMARKS.get(b) for b in benchmarks]
    all_items = [b.work_items(limit) for b in benches]
    # A limit that keeps every prompt is a full run; a smaller one is partial (written apart).
    partial = [
        limit if limit is not None and len(b.load_prompts(limit + 1)) > limit else None for b in benches
    ]
    jobs, skipped = _plan_rewards(benches, reward_options or {})

    cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    run_device = torch.device(device) if device is not None else state.device
    rank, world = state.process_index, state.num_processes
    show = progress and state.is_main_process

    runs = [
        _BenchRun(bench=b, items=items, mine=list(range(rank, len(items), world)))
        for b, items in zip(benches, all_items, strict=True)
    ]
    image_cache, score_cache = ImageCache(cache_root), ScoreCache(cache_root)
    handle = _Model(model_name, preset, run_device)
    stats = RunStats(items=sum(len(r.mine) for r in runs))

    if any(
        not image_cache.png_path(
            ImageCache.key(handle.identity(), run.items[p].prompt.text, run.items[p].seed)
        ).is_file()
        for run in runs
        for p in run.mine
    ):
        _check_reward_weights(jobs)  # before generating: a missing weight must not cost the generation
    _generate_phase(runs, handle, image_cache, batch_size, stats, show)
    handle.release()
    failed = _score_phase(runs, jobs, image_cache, score_cache, batch_size, run_device, stats, show)

    # Gather rows, stats and unavailable rewards to rank 0.
    failed_all = set(gather_object(sorted(failed)))
    all_stats = gather_object([stats])
    per_bench_rows = [gather_object(_rows(run, handle)) for run in runs]
    results: list[EvalResult] = []
    if state.is_main_process:
        total = RunStats()
        for s in all_stats:
            total.add(s)
        for run, rows, part in zip(runs, per_bench_rows, partial, strict=True):
            drop = {m for (b, m) in skipped if b == run.bench.name}
            drop |= {u.metric for j in jobs if j.name in failed_all for b, u in j.uses if b == run.bench.name}
            results.append(_finish(run, rows, drop, jobs, handle, part, total, results_root, write))
    state.wait_for_everyone()
    return results


def _generate_phase(
    runs: list[_BenchRun], model: _Model, cache: ImageCache, batch_size: int, stats: RunStats, show: bool
) -> None:
    from tqdm.auto import tqdm

    from tdm_r1.images import check_images, png_bytes

    for run in runs:
        bar = tqdm(total=len(run.mine), desc=f"generate {run.bench.name}", disable=not show, unit="img")
        for chunk in _batched(run.mine, batch_size):
            items = [run.items[p] for p in chunk]
            keys = [ImageCache.key(model.identity(), it.prompt.text, it.seed) for it in items]
            found = [cache.get(k) for k in keys]
            missing = [j for j, entry in enumerate(found) if entry is None]
            stats.image_hits += len(chunk) - len(missing)
            if missing:
                adapter = model.adapter()
                t0 = time.perf_counter()
                images = adapter.generate(
                    [items[j].prompt.text for j in missing],
                    [items[j].seed for j in missing],
                    batch_size=batch_size,
                    progress=False,
                )
                stats.generate_seconds += time.perf_counter() - t0
                stats.generate_calls += 1
                check_images(images)
                if images.shape[0] != len(missing):
                    raise ShapeError(
                        f"{model.name}.generate returned {images.shape[0]} images for {len(missing)} prompts"
                    )
                for j, image in zip(missing, images, strict=True):
                    info = {"prompt": items[j].prompt.text, "seed": items[j].seed, "model": model.name}
                    found[j] = cache.put(keys[j], png_bytes(image), info)
                stats.images_generated += len(missing)
            for pos, entry in zip(chunk, found, strict=True):
                assert entry is not None
                run.images[pos] = entry
            bar.update(len(chunk))
        bar.close()


def _score_phase(
    runs: list[_BenchRun],
    jobs: list[_RewardJob],
    image_cache: ImageCache,
    score_cache: ScoreCache,
    batch_size: int,
    device: Any,
    stats: RunStats,
    show: bool,
) -> set[str]:
    """Score every (item, reward use); returns the names of optional rewards that could not load."""
    import torch
    from tqdm.auto import tqdm

    from tdm_r1.rewards.base import NAN_REASON

    by_name = {run.bench.name: run for run in runs}
    failed: set[str] = set()
    for job in jobs:
        # (run, pos, use, score key) for every item this rank scores with this job
        todo = []
        for bench_name, use in job.uses:
            run = by_name[bench_name]
            for pos in run.mine:
                item, image = run.items[pos], run.images[pos]
                key = ScoreCache.key(
                    image.sha256, job.key_identity, job.options, item.prompt.text, item.prompt.metadata
                )
                todo.append((run, pos, use, key))
        entries = [score_cache.get(key) for *_, key in todo]
        bounds = getattr(job.cls, "score_range", None)
        if bounds is not None:  # a hand-edited or corrupt cache entry outside the reward's range
            bad = [i for i, e in enumerate(entries) if e is not None and not _in_range(e.score, bounds)]
            if bad:
                log.warning(
                    "%d cached %s scores lie outside its range [%g, %g] (e.g. %r): scoring them again",
                    len(bad),
                    job.name,
                    *bounds,
                    entries[bad[0]].score,  # type: ignore[union-attr]
                )
                for i in bad:
                    entries[i] = None
        missing = [i for i, e in enumerate(entries) if e is None]
        if not missing:
            stats.score_hits += len(todo)
            for (run, pos, use, _), entry in zip(todo, entries, strict=True):
                run.scores[(pos, use.metric)] = entry  # type: ignore[assignment]
            continue
        try:
            reward = job.build(device)
        except (MissingWeightsError, MissingExtraError) as exc:
            if not job.optional:
                raise
            log.warning("optional reward %s is unavailable and is skipped: %s", job.name, exc)
            failed.add(job.name)
            continue
        # Entries written by a differently configured reward (its version depends on its
        # options or environment) are scored again rather than mixed in.
        stale = [i for i, e in enumerate(entries) if e is not None and e.reward_id != reward.id]
        if stale:
            log.warning(
                "%d cached %s scores came from %s, not %s: scoring them again",
                len(stale),
                job.name,
                entries[stale[0]].reward_id,  # type: ignore[union-attr]
                reward.id,
            )
            missing = sorted(set(missing) | set(stale))
        stats.score_hits += len(todo) - len(missing)
        bar = tqdm(total=len(missing), desc=f"score {job.name}", disable=not show, unit="img")
        for batch in _batched(missing, batch_size):
            rows = [todo[i] for i in batch]
            images = torch.stack([image_cache.load(run.images[pos]) for run, pos, _, _ in rows])
            prompts = [run.items[pos].prompt.text for run, pos, _, _ in rows]
            metadata = [run.items[pos].prompt.metadata for run, pos, _, _ in rows]
            t0 = time.perf_counter()
            out = reward(images=images, prompts=prompts, metadata=metadata)
            stats.score_seconds += time.perf_counter() - t0
            stats.reward_calls += 1
            stats.scores_computed += len(batch)
            for i, sample in zip(batch, out.rows(), strict=True):
                score = float(sample.pop("score"))
                reason = str(sample.pop(NAN_REASON, "") or "")
                entries[i] = ScoreEntry(score, reason, sample, reward.id, str(reward.version))
                score_cache.put(todo[i][3], entries[i])
            bar.update(len(batch))
        bar.close()
        for (run, pos, use, _), entry in zip(todo, entries, strict=True):
            run.scores[(pos, use.metric)] = entry  # type: ignore[assignment]
        del reward
        _free_memory(device)
    return failed


def _in_range(score: float, bounds: tuple[float, float]) -> bool:
    """NaN (with its reason) is a valid score; anything else must lie in ``bounds`` (float slack)."""
    lo, hi = bounds
    return math.isnan(score) or lo - 1e-6 <= score <= hi + 1e-6


def _rows(run: _BenchRun, model: _Model) -> list[dict[str, Any]]:
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


def _finish(
    run: _BenchRun,
    rows: list[dict[str, Any]],
    drop: set[str],
    jobs: list[_RewardJob],
    model: _Model,
    limit: int | None,
    stats: RunStats,
    results_root: Path | None,
    write: bool,
) -> EvalResult:
    import pandas as pd

    from tdm_r1.eval.results import SAMPLE_COLUMNS, run_files, write_run

    rows = sorted((r for r in rows if r["metric"] not in drop), key=lambda r: (r["_pos"], r["_use"]))
    samples = pd.DataFrame(rows, columns=["_pos", "_use", *SAMPLE_COLUMNS]).drop(columns=["_pos", "_use"])
    samples = samples.reset_index(drop=True)
    uses = [(role, use) for role, use in run.bench.reward_uses() if use.metric not in drop]
    summary = summarize(
        samples, uses, model_name=model.name, nfe=model.nfe, bench=run.bench, config_hash=model.config_hash()
    )
    for metric in sorted(drop):
        log.warning("%s: metric %r was skipped (reward unavailable)", run.bench.name, metric)
    nan = samples[samples["score"].isna()]
    if len(nan):
        log.warning(
            "%s: %d of %d scores are NaN, e.g. %s",
            run.bench.name,
            len(nan),
            len(samples),
            nan["nan_reason"].iloc[0],
        )
    hib = {job.name: job.higher_is_better for job in jobs}
    from tdm_r1.registry import REWARDS

    meta = {
        "tdmbench_version": __version__,
        "benchmark": run.bench.to_dict(),
        "model": {
            "name": model.name,
            "nfe": model.nfe,
            "kind": getattr(model.preset, "kind", None),
            "config": model.config(),
            "sampler": model.sampler(),
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
    files = None
    if write:
        files = run_files(run.bench.name, model.name, results_root, limit=limit)
        write_run(files, summary, samples, meta)
        log.info("wrote %s", files.csv)
    return EvalResult(model.name, run.bench.name, summary, samples, meta, files, stats)


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
