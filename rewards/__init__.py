"""Reward implementations, installed as ``tdm_r1.rewards``.

Importing this package registers every built-in reward and stays cheap: each reward imports
its heavy backend (onnxruntime, open_clip, transformers models...) in ``__init__``.
"""

from __future__ import annotations

# Importing the modules registers the rewards (each imports its backend lazily, in __init__).
from tdm_r1.rewards import (  # noqa: F401
    aesthetic,
    clipscore,
    geneval,
    hpsv2,
    imagereward,
    jpeg,
    likes,
    ocr,
    pickscore,
    vlm_judge,
)
from tdm_r1.rewards.base import Reward, RewardOutput, WeightedSum, build_reward, parse_reward_specs

__all__ = ["Reward", "RewardOutput", "WeightedSum", "build_reward", "parse_reward_specs"]
