"""Training data of the toy world: ground-truth renders, rendered in parallel, deterministic.

``render_dataset(n, seed)`` renders ``n`` prompts in fixed chunks, each chunk with its own seed,
so the result does not depend on the number of worker processes (a resumed or re-run build sees
exactly the same data).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tdm_r1.apps.toybuild.render import render
from tdm_r1.toyworld.grammar import PromptSampler

CHUNK = 1024


@dataclass
class RenderedSet:
    metas: list[dict[str, Any]]
    images: np.ndarray  # (N, 64, 64, 3) uint8

    def __len__(self) -> int:
        return len(self.metas)


def _render_chunk(
    args: tuple[int, int, int, str, dict[str, float] | None],
) -> tuple[list[dict[str, Any]], np.ndarray]:
    seed, chunk, size, split, weights = args
    sampler = PromptSampler(split=split, weights=weights, seed=seed * 100_003 + chunk)
    metas = sampler.sample(size)
    rng = np.random.default_rng([seed, chunk])
    return metas, np.stack([render(m, rng)[0] for m in metas])


def render_dataset(
    n: int,
    seed: int,
    *,
    split: str = "train",
    weights: dict[str, float] | None = None,
    workers: int | None = None,
) -> RenderedSet:
    """Render ``n`` training prompts (task mix ``weights``) with ``workers`` processes."""
    sizes = [min(CHUNK, n - i) for i in range(0, n, CHUNK)]
    jobs = [(seed, c, s, split, weights) for c, s in enumerate(sizes)]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or len(jobs) == 1:
        parts = [_render_chunk(j) for j in jobs]
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    metas = [m for p in parts for m in p[0]]
    return RenderedSet(metas, np.concatenate([p[1] for p in parts]))
