"""A reward's version: ``base_version`` on the class, plus ``version_suffix()`` on an instance."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tdm_r1.registry import REWARDS
from tdm_r1.rewards.base import Reward, RewardOutput, WeightedSum


class Scaled(Reward):
    name = "test-scaled"
    base_version = "3"

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def version_suffix(self) -> str:
        return "" if self.factor == 1.0 else f"+x{self.factor:g}"

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        return RewardOutput(self.factor * images.mean(dim=(1, 2, 3)))


def test_class_gives_base_version_and_instance_adds_its_options() -> None:
    assert Scaled.version == "3"  # what score-cache keys are planned from, before building
    assert Scaled().version == "3" and Scaled().id == "test-scaled@3"
    assert Scaled(2).version == "3+x2" and Scaled(2).describe()["version"] == "3+x2"
    total = WeightedSum([(Scaled(), 0.5), (Scaled(2), 1.0)])
    assert total.id == total.version == "test-scaled@3*0.5+test-scaled@3+x2*1"


def test_version_is_read_only() -> None:
    with pytest.raises(AttributeError, match="base_version or override version_suffix"):
        Scaled().version = "4"  # type: ignore[misc]


def test_every_builtin_reward_declares_a_base_version() -> None:
    for entry in REWARDS.entries():
        cls = entry.obj
        assert "base_version" in vars(cls) and cls.version == cls.base_version != "", entry.name
        assert "version" not in vars(cls), f"{entry.name}: set base_version, not version"
