"""Named random streams: every random draw of a run comes from a seed derived from its name and keys.

A seed is a hash of (run seed, stream, keys), so a draw does not depend on batch composition,
order, process count or on what was drawn before; any subset of images regenerates identically
and a resumed run continues as if uninterrupted. The stream names are the strings hashed, so they
must never change (they define the shipped models and the golden test).
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Stream(StrEnum):
    """The training streams (generation's per-image seeds use plain keys: prompt and image index)."""

    ORDER = "order"  # the epoch's group order
    NOISE = "noise"  # rollout initial noise, per global sample
    BOUNDS = "bounds"  # which boundaries a block trains
    TAU = "tau"  # fake-score / KL query noise level, per sample
    EPS = "eps"  # fake-score / KL query noise, per sample
    SUR_J = "sur-j"  # the surrogate's query boundary, per block
    SUR_TAU = "sur-tau"  # the surrogate's query noise level, per group
    SUR_EPS = "sur-eps"  # the surrogate's query noise, per group
    RL_TAU = "rl-tau"  # the generator's reward query noise level, per group
    RL_EPS = "rl-eps"  # the generator's reward query noise, per group
    SDE = "sde"  # an SDE rollout's step noise, per (step, global sample)
    SDE_WINDOW = "sde-window"  # Flow-GRPO-Fast's SDE window start, per epoch
    NFT_T = "nft-t"  # DiffusionNFT's training noise levels (grid permutation), per sample
    NFT_EPS = "nft-eps"  # DiffusionNFT's training noise, per (level slot, sample)
    DGPO_T = "dgpo-t"  # DGPO's training grid indices, per epoch
    DGPO_EPS = "dgpo-eps"  # DGPO's training noise, per (grid index, group)
    # instruments (``method.diagnostics_every``): draws of their own, so that turning them on
    # changes no draw of the training streams above
    DIAG_PROMPTS = "diag-prompts"  # the fresh groups' prompts, per epoch
    DIAG_NOISE = "diag-noise"  # the fresh groups' rollout noise, per global sample
    DIAG_TAU = "diag-tau"  # the surrogate probe's query noise level, per (boundary, group)
    DIAG_EPS = "diag-eps"  # the surrogate probe's query noise, per (boundary, group)


def derive_seed(base_seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived deterministically from ``base_seed`` and keys (e.g. prompt index, image index)."""
    text = ":".join(str(k) for k in (base_seed, *keys))  # str(Stream.X) is its value
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    import torch

    return torch.Generator().manual_seed(seed)


def rows_randn(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *shape) standard normal, one generator per row (independent of batching)."""
    import torch

    return torch.stack([torch.randn(shape, generator=generator(s)) for s in seeds])


def rows_rand(seeds: list[int]) -> torch.Tensor:
    """(N,) uniform [0, 1), one generator per row."""
    import torch

    return torch.stack([torch.rand((), generator=generator(s)) for s in seeds])
