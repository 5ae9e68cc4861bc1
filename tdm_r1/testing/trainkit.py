"""Tiny models and rewards for trainer tests (registered into the registries by fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tdm_r1.rewards.base import Reward, RewardOutput


class Brightness(Reward):
    """Mean pixel value (test reward, higher = brighter)."""

    name = "test-brightness"
    version = "1"
    scale = "mean of the image in [0, 1]"

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        return RewardOutput(images.float().mean(dim=(1, 2, 3)), {})


def tiny_pipeline_folder(path: Path) -> Path:
    from tdm_r1.testing.tiny import tiny_sd3_pipeline

    if not (path / "model_index.json").is_file():
        tiny_sd3_pipeline(seed=0).save_pretrained(path)
    return path


def register(folder: Path) -> list[str]:
    """Register the tiny preset and the test reward; returns names to unregister."""
    from tdm_r1.models.preset import ModelPreset, register_preset
    from tdm_r1.models.spec import SamplingSpec
    from tdm_r1.registry import REWARDS

    register_preset(
        ModelPreset(
            name="tiny-trainer",
            family="sd3",
            hub_id=str(folder),
            sampling=SamplingSpec(
                steps=2,
                guidance=1.0,
                shift=1.0,
                height=32,
                width=32,
            ),
            kind="distilled",
            dtype="float32",
        )
    )
    if "test-brightness" not in REWARDS:
        REWARDS.add("test-brightness", Brightness)
    return ["tiny-trainer"]


def small_config(tmp: Path, **changes: Any) -> Any:
    from tdm_r1.config import load_config
    from tdm_r1.train.config import TrainConfig

    data = {
        "name": "t",
        "seed": 0,
        "output_dir": str(tmp / "run"),
        "rewards": {"test-brightness": 1.0},
        "model": {"name": "tiny-trainer", "lora_rank": 4, "lora_alpha": 4, "offload_text_encoders": False},
        "data": {"source": "toy", "toy_tasks": {"single_object": 1.0, "colors": 1.0}},
        "rollout": {"prompts_per_epoch": 2, "group_size": 4, "batch_size": 8},
        "method": {"micro_batch": 4, "num_train_timesteps": 1, "beta_dpo": 1.0, "clip_range": 1.0},
        "optim": {"lr": 1e-2, "grad_accum": 1, "ema_decay": 0.5},
        "max_epochs": 2,
        "checkpoint_every": 1,
        "trackers": [],
    }
    from tdm_r1.config import merge

    merged = merge(data, changes)
    if "rewards" in changes:  # replace, do not merge: {} means distillation
        merged["rewards"] = changes["rewards"]
    return load_config(TrainConfig, data=merged)
