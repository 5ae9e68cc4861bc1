"""DGPO's options: the ``method.dgpo`` section of a training config.

A method's options live beside its training plug-in (``tdm_r1/train/methods/dgpo.py``), without
torch, so that a config is parsed and checked before anything heavy is imported; the registry entry
of the method names this class (``tdm_r1/train/methods/__init__.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DgpoOptions:
    """``method.name=dgpo`` (arXiv:2510.08425; defaults: Mode 1, the public SD3.5-M OCR recipe)."""

    #: ODE rollout steps (10 in the public recipe); None = the model's.
    rollout_steps: int | None = None
    beta_dpo: float = 100.0
    clip_range: float = 1e-2
    #: KL to the starting model (train.beta 0.02).
    kl_beta: float = 0.02
    #: Rollout CFG (4.5 Mode 1; 1 Mode 2); None = the model's. The policy trains its conditional velocity.
    guidance: float | None = None
    #: The reference's CFG (kl_cfg: 1 Mode 1, 4.5 Mode 2a).
    ref_guidance: float = 1.0
    #: The fast EMA ("old") copy is also the DGPO reference (Mode 2b).
    use_ema_ref: bool = False
    #: M distinct rollout-grid indices per epoch, drawn from 0..trunc_steps (high-noise end).
    num_train_timesteps: int = 4
    trunc_steps: int = 6
    #: After this many generator updates the fast EMA samples the rollouts (200; GenEval 500).
    switch_ema_ref: int = 200
