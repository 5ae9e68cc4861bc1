"""A tiny deterministic world for the evaluation tests: models, rewards and benchmarks.

- Models (``kit-base`` 100 NFE, ``kit-4step``, ``kit-r1``): a pure-torch "generator" whose image
  depends only on (model brightness, prompt, seed); ``CALLS`` counts generate calls and images.
- Rewards: ``kit-brightness`` (mean pixel value; NaN with a reason when the prompt contains the
  word ``nan``), ``kit-darkness`` (lower is better), ``kit-geneval`` (GenEval-style details:
  ``correct``, ``strict``, ``partial``, ``reason``, ``tag``).
- Benchmarks ``kit-geneval`` (12 prompts over the six GenEval tags x 2 seeds) and ``kit-bright``
  (10 prompts x 1 seed), built with the ``toy`` prompt source pointing at this module.

``register()`` adds them to the registries (the ``--plugin tdm_r1.testing.evalkit:register`` entry point for
subprocesses); the ``kit`` fixture does it for one test and restores the registries afterwards.
``EVALKIT_LOG=<file>`` makes every process append ``prompt|seed`` per generated image to it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from tdm_r1.eval.benchmark import GENEVAL_TASKS, Benchmark, PromptSource, RewardUse
from tdm_r1.registry import BENCHMARKS, MODELS, REWARDS
from tdm_r1.rewards.base import NAN_REASON, Reward, RewardOutput


@dataclass
class Calls:
    loads: int = 0
    generate_calls: int = 0
    images: int = 0
    reward_calls: int = 0
    scored: int = 0
    load_device: Any = None

    def reset(self) -> None:
        self.loads = self.generate_calls = self.images = self.reward_calls = self.scored = 0
        self.load_device = None


CALLS = Calls()


def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16)


class KitAdapter:
    def __init__(self, preset: KitPreset, device: Any = None) -> None:
        self.preset = preset
        self.nfe = preset.nfe
        self.device = torch.device(device or "cpu")

    def config_dict(self) -> dict[str, Any]:
        return {"kit": self.preset.name, "brightness": self.preset.brightness}

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        steps: int | None = None,
        guidance: float | None = None,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 8,
        progress: bool = True,
    ) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1]: per-image noise around the preset's brightness."""
        p = self.preset
        if p.fail_after is not None and CALLS.images + len(prompts) > p.fail_after:
            raise RuntimeError(f"simulated crash after {CALLS.images} images")
        CALLS.generate_calls += 1
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            g = torch.Generator().manual_seed(_seed_of(prompt, seed))
            lift = 0.3 if "bright" in prompt else 0.0
            img = (p.brightness + lift + 0.15 * torch.randn(3, p.height, p.width, generator=g)).clamp(0, 1)
            out.append(img)
            CALLS.images += 1
        log = os.environ.get("EVALKIT_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.writelines(f"{prompt}|{seed}\n" for prompt, seed in zip(prompts, seeds, strict=True))
        return torch.stack(out).to(self.device)  # like a real adapter: images on its device


@dataclass
class KitPreset:
    name: str
    nfe: int
    kind: str
    brightness: float
    steps: int = 4
    guidance: float = 0.0
    height: int = 16
    width: int = 16
    few_step_base: str | None = None
    baseline: str | None = None
    in_domain: list[str] | None = None
    benchmarks: tuple[str, ...] = ("kit-geneval", "kit-bright")
    fail_after: int | None = None
    sources: str = ""

    def describe(self) -> dict[str, Any]:
        return {"nfe": self.nfe, "kind": self.kind}

    def config_dict(self) -> dict[str, Any]:
        return {"kit": self.name, "brightness": self.brightness}

    def load(self, device: Any = None, dtype: Any = None, **overrides: Any) -> KitAdapter:
        CALLS.loads += 1
        CALLS.load_device = device
        return KitAdapter(self, device)


class KitBrightness(Reward):
    name = "kit-brightness"
    version = "1"
    scale = "mean pixel value in [0, 1]"
    fail_after: ClassVar[int | None] = None

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        if self.fail_after is not None and CALLS.scored + len(prompts) > self.fail_after:
            raise RuntimeError(f"simulated reward crash after {CALLS.scored} images")
        CALLS.reward_calls += 1
        CALLS.scored += len(prompts)
        scores = images.mean(dim=(1, 2, 3))
        reasons = [""] * len(prompts)
        for i, prompt in enumerate(prompts):
            if "nan" in prompt.split():
                scores[i] = float("nan")
                reasons[i] = "prompt asks for a NaN"
        return RewardOutput(scores, {NAN_REASON: reasons, "channels": images.mean(dim=(2, 3))[:, 0]})


class KitDarkness(Reward):
    name = "kit-darkness"
    version = "1"
    higher_is_better = False
    scale = "1 - mean pixel value"

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        CALLS.reward_calls += 1
        return RewardOutput(1 - images.mean(dim=(1, 2, 3)), {})


class KitGeneval(Reward):
    """``correct`` = the image is brighter than the threshold (``partial`` = its brightness)."""

    name = "kit-geneval"
    version = "1"
    scale = "1 if correct else 0"

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        CALLS.reward_calls += 1
        bright = images.mean(dim=(1, 2, 3))
        correct = (bright > self.threshold).float()
        details = {
            "correct": correct,
            "strict": correct.clone(),
            "partial": bright,
            "reason": ["" if c else "too dark" for c in correct.tolist()],
            "tag": [m.get("tag", "") for m in metadata],
        }
        return RewardOutput(correct, details)


def geneval_prompts(n: int = 12) -> list[dict[str, Any]]:
    """GenEval-format prompts cycling over the six tags; every third one says 'bright'."""
    out = []
    for i in range(n):
        tag = GENEVAL_TASKS[i % len(GENEVAL_TASKS)]
        word = "bright" if i % 3 == 0 else "plain"
        out.append({"id": f"g{i:03d}", "prompt": f"a {word} {tag} scene {i}", "tag": tag, "include": []})
    return out


def bright_prompts(n: int = 10) -> list[dict[str, Any]]:
    """Prompts for the brightness reward; prompt 3 asks for a NaN."""
    return [
        {
            "id": f"b{i:03d}",
            "prompt": f"picture {i} nan" if i == 3 else f"picture {i}",
            "target_text": f"T{i}",
        }
        for i in range(n)
    ]


MODEL_PRESETS = (
    KitPreset("kit-base", nfe=100, kind="base", brightness=0.45),
    KitPreset("kit-4step", nfe=4, kind="distilled", brightness=0.40),
    KitPreset(
        "kit-r1",
        nfe=4,
        kind="rl",
        brightness=0.55,
        few_step_base="kit-4step",
        baseline="kit-base",
        in_domain=["kit-geneval"],
        sources="kit RL run on kit-4step (bright images liked)",
    ),
)


def kit_benchmarks() -> list[Benchmark]:
    return [
        Benchmark(
            name="kit-geneval",
            version="1",
            description="evalkit GenEval-style suite",
            prompts=PromptSource(
                type="toy", generator="tdm_r1.testing.evalkit:geneval_prompts", args={"n": 12}
            ),
            images_per_prompt=2,
            seeds=[0, 1],
            in_domain=[RewardUse(name="kit-geneval", aggregate="geneval")],
        ),
        Benchmark(
            name="kit-bright",
            version="1",
            description="evalkit brightness suite",
            prompts=PromptSource(
                type="toy", generator="tdm_r1.testing.evalkit:bright_prompts", args={"n": 10}
            ),
            in_domain=[RewardUse(name="kit-brightness")],
            out_of_domain=[RewardUse(name="kit-darkness")],
        ),
    ]


def register() -> None:
    """Add the kit's models, rewards and benchmarks to the registries (idempotent)."""
    for preset in MODEL_PRESETS:
        MODELS.add(preset.name, preset)
    for cls in (KitBrightness, KitDarkness, KitGeneval):
        REWARDS.add(cls.name, cls)
    for bench in kit_benchmarks():
        BENCHMARKS.add(bench.name, bench)


@dataclass
class Kit:
    results: Path
    cache: Path
    calls: Calls = field(default_factory=lambda: CALLS)


@pytest.fixture(name="kit")
def kit_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Kit:
    """Registries with the kit added (restored after the test), fresh results and cache folders."""
    for registry in (MODELS, REWARDS, BENCHMARKS):
        registry.names()  # import the built-ins first, so that they land in the saved copy
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_alias", dict(registry._alias))
    register()
    CALLS.reset()
    monkeypatch.setattr(KitBrightness, "fail_after", None)
    kit = Kit(results=tmp_path / "results", cache=tmp_path / "cache")
    monkeypatch.setenv("TDMBENCH_RESULTS", str(kit.results))
    monkeypatch.setenv("TDMBENCH_CACHE", str(kit.cache))
    monkeypatch.setenv("TDMBENCH_RUNS", str(tmp_path / "runs"))  # never the checkout's ./runs
    return kit
