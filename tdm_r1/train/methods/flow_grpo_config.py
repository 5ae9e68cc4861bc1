"""Flow-GRPO's options: the ``method.flow_grpo`` section of a training config.

A method's options live beside its training plug-in (``tdm_r1/train/methods/flow_grpo.py``), without
torch, so that a config is parsed and checked before anything heavy is imported; the registry entry
of the method names this class (``tdm_r1/train/methods/__init__.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FlowGrpoOptions:
    """``method.name=flow-grpo`` (arXiv:2505.05470; defaults: flow_grpo's SD3.5-M GenEval/OCR recipe)."""

    #: SDE rollout steps ("denoising reduction": 10 on a 40-step model); None = the model's steps.
    #: The exported model keeps the model's own inference steps.
    rollout_steps: int | None = None
    #: The SDE: "flow" (Flow-GRPO's, a = noise_level) or "cps" (Flow-GRPO-Fast's).
    sde: str = "flow"
    noise_level: float = 0.7
    #: Clip of the per-element-mean likelihood ratio (1e-4; 1e-5 with CPS / Fast).
    clip_range: float = 1e-4
    #: KL to the starting model (0.04 GenEval/OCR, 0.01 PickScore; 0 in the Fast presets).
    beta_kl: float = 0.04
    #: Full Flow-GRPO trains the first int(rollout_steps * timestep_fraction) steps (9 of 10).
    timestep_fraction: float = 0.99
    #: Flow-GRPO-Fast: SDE (and training) on this many consecutive steps, the rest ODE (0 = full).
    sde_window: int = 0
    #: Fast: the window lies in steps [lo, hi) (None = all rollout steps).
    sde_window_range: list[int] | None = None
    #: CFG scale in rollout and training (the guided step is the policy); None = the model's.
    guidance: float | None = None
