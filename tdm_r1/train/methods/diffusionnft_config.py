"""DiffusionNFT's options: the ``method.diffusionnft`` section of a training config.

A method's options live beside its training plug-in (``tdm_r1/train/methods/diffusionnft.py``), without
torch, so that a config is parsed and checked before anything heavy is imported; the registry entry
of the method names this class (``tdm_r1/train/methods/__init__.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DiffusionNftOptions:
    """``method.name=diffusionnft`` (arXiv:2509.16117; defaults: the public SD3.5-M GenEval recipe)."""

    #: ODE rollout steps of the "old" sampling policy (10 in the public recipe); None = the model's.
    rollout_steps: int | None = None
    #: NFT's trust-region beta (1.0 GenEval; 0.1 OCR).
    beta: float = 1.0
    #: KL to the starting model (train.beta = 1e-4).
    kl_beta: float = 1e-4
    #: Old-policy soft-update schedule after each epoch: 1 (default) or 2 (OCR).
    decay_type: int = 1
    #: Each sample trains on int(K * timestep_fraction) of the rollout grid's sigmas (9 of 10).
    timestep_fraction: float = 0.99
