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

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdm_r1.errors import MissingExtraError, MissingWeightsError, ShapeError
from tdm_r1.eval.benchmark import Benchmark, WorkItem
from tdm_r1.eval.cache import CachedImage, ImageCache, ScoreCache, ScoreEntry
from tdm_r1.eval.model import EvalModel, free_memory, resolve_eval_model
from tdm_r1.eval.reward_jobs import RewardJob, check_reward_weights, plan_rewards
from tdm_r1.eval.summary import run_meta, sample_rows, summarize
from tdm_r1.weights_check import check_lora_source

if TYPE_CHECKING:
    import pandas as pd

    from tdm_r1.eval.results import RunFiles
    from tdm_r1.models.preset import ModelPreset

log = logging.getLogger(__name__)

__all__ = ["BenchRun", "EvalInterrupted", "EvalResult", "RunStats", "evaluate", "summarize"]


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


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what it had cached by then (every image and score is cached as
    soon as it exists, so rerunning the command resumes from there)."""

    def __init__(self, stats: RunStats, cache: Path) -> None:
        super().__init__()
        self.stats, self.cache = stats, cache

    def message(self) -> str:
        s = self.stats
        return (
            f"interrupted: {s.images_generated} new image(s) and {s.scores_computed} new score(s) of this run "
            f"are cached in {self.cache} (with {s.image_hits} image(s) and {s.score_hits} score(s) found there); "
            "rerun the same command to resume: cached work is not redone"
        )


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


# ------------------------------------------------------------------------------------------- run
@dataclass
class BenchRun:
    """One benchmark's work in one process: its items, and the images and scores found so far."""

    bench: Benchmark
    items: list[WorkItem]  # all items, in the one-process order
    mine: list[int]  # positions in ``items`` that this rank handles
    images: dict[int, CachedImage] = field(default_factory=dict)
    scores: dict[tuple[int, str], ScoreEntry] = field(default_factory=dict)  # (pos, metric)


def evaluate(
    model: str | Path | ModelPreset,
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
    """Evaluate ``model`` on ``benchmarks`` (default: the preset's ``benchmarks`` attribute, else
    the four official suites).

    ``model`` is a registered name, a preset object (a :class:`~tdm_r1.models.preset.ModelPreset`,
    e.g. a training run's ``load_preset_file(run / "final" / "preset.json")``), or a path: a run
    folder (``runs/<name>`` or ``runs/<name>/final``), a ``preset.json`` or a diffusers pipeline
    folder (see :func:`tdm_r1.eval.model.resolve_eval_model`). Nothing is registered; results are
    written under the registered name, or the preset's own ``name``.

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

    from tdm_r1.registry import BENCHMARKS

    if batch_size < 1:
        raise ShapeError(f"batch_size must be >= 1, got {batch_size}")
    # Resolve every name and read every prompt file before any model is loaded: typos and
    # missing data fail within a second.
    model_name, preset = resolve_eval_model(model)
    check_lora_source(getattr(preset, "lora", None))  # a damaged LoRA: one line now, not a traceback later
    if not benchmarks:
        benchmarks = list(getattr(preset, "benchmarks", None) or ("geneval", "ocr", "pickscore", "drawbench"))
    benches = [b if isinstance(b, Benchmark) else BENCHMARKS.get(b) for b in benchmarks]
    all_items = [b.work_items(limit) for b in benches]
    # A limit that keeps every prompt is a full run; a smaller one is partial (written apart).
    partial = [
        limit if limit is not None and len(b.load_prompts(limit + 1)) > limit else None for b in benches
    ]
    jobs, skipped = plan_rewards(benches, reward_options or {})

    cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    run_device = torch.device(device) if device is not None else state.device
    rank, world = state.process_index, state.num_processes
    show = progress and state.is_main_process

    runs = [
        BenchRun(bench=b, items=items, mine=list(range(rank, len(items), world)))
        for b, items in zip(benches, all_items, strict=True)
    ]
    image_cache, score_cache = ImageCache(cache_root), ScoreCache(cache_root)
    handle = EvalModel(model_name, preset, run_device)
    stats = RunStats(items=sum(len(r.mine) for r in runs))

    if any(
        not image_cache.png_path(
            ImageCache.key(handle.identity(), run.items[p].prompt.text, run.items[p].seed)
        ).is_file()
        for run in runs
        for p in run.mine
    ):
        check_reward_weights(jobs)  # before generating: a missing weight must not cost the generation
    try:
        _generate_phase(runs, handle, image_cache, batch_size, stats, show)
        handle.release()
        failed = _score_phase(runs, jobs, image_cache, score_cache, batch_size, run_device, stats, show)
    except KeyboardInterrupt as exc:
        raise EvalInterrupted(stats, image_cache.root.parent) from exc

    # Gather rows, stats and unavailable rewards to rank 0.
    failed_all = set(gather_object(sorted(failed)))
    all_stats = gather_object([stats])
    per_bench_rows = [gather_object(sample_rows(run, handle)) for run in runs]
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
    runs: list[BenchRun], model: EvalModel, cache: ImageCache, batch_size: int, stats: RunStats, show: bool
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
    runs: list[BenchRun],
    jobs: list[RewardJob],
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
        free_memory(device)
    return failed


def _in_range(score: float, bounds: tuple[float, float]) -> bool:
    """NaN (with its reason) is a valid score; anything else must lie in ``bounds`` (float slack)."""
    lo, hi = bounds
    return math.isnan(score) or lo - 1e-6 <= score <= hi + 1e-6


def _finish(
    run: BenchRun,
    rows: list[dict[str, Any]],
    drop: set[str],
    jobs: list[RewardJob],
    model: EvalModel,
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
    meta = run_meta(run, samples, uses, drop, jobs, model, limit)
    files = None
    if write:
        files = run_files(run.bench.name, model.name, results_root, limit=limit)
        write_run(files, summary, samples, meta)
        log.info("wrote %s", files.csv)
    return EvalResult(model.name, run.bench.name, summary, samples, meta, files, stats)
