"""PickScore v1: ``logit_scale.exp() * cos(text, image)`` of a CLIP ViT-H/14 fine-tuned on Pick-a-Pic.

Weights ``yuvalkirstain/PickScore_v1``; processor (tokenizer + 224 px preprocessing)
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, as in the PickScore README and Flow-GRPO. The default
is the raw value of the published tables (SD3.5-M about 21.7-22.3; logit_scale.exp() is about 100).
``flowgrpo_scale=True`` divides by 26, Flow-GRPO's training reward, under its own version id.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tdm_r1.registry import register_reward
from tdm_r1.rewards.clip_backbone import MODEL_PATTERNS, PROCESSOR_PATTERNS, HFClip, l2_normalize
from tdm_r1.rewards.model_reward import ModelReward
from tdm_r1.weights import WeightFile, declare, resolve

MODEL = WeightFile(
    key="pickscore.model",
    hub_id="yuvalkirstain/PickScore_v1",
    filename=None,
    size="3.9 GB",
    env="TDMBENCH_PICKSCORE_MODEL",
    option="--reward-option pickscore.model_path",
    description="PickScore_v1 CLIP ViT-H/14 (transformers CLIPModel folder)",
    patterns=MODEL_PATTERNS,
)
PROCESSOR = WeightFile(
    key="pickscore.processor",
    hub_id="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    filename=None,
    size="4 MB (tokenizer and preprocessor files only)",
    env="TDMBENCH_PICKSCORE_PROCESSOR",
    option="--reward-option pickscore.processor_path",
    description="CLIP ViT-H/14 processor used by PickScore (tokenizer + preprocessor_config.json)",
    patterns=PROCESSOR_PATTERNS,
)
declare(MODEL, PROCESSOR)

#: Flow-GRPO's training reward is the raw PickScore divided by this.
FLOWGRPO_DIVISOR = 26.0


@register_reward("pickscore")
class PickScore(ModelReward):
    """PickScore v1 (raw scale by default).

    Args:
        model_path: local folder of ``yuvalkirstain/PickScore_v1`` (else env / HF cache / hub).
        processor_path: local folder of the CLIP-H processor files.
        flowgrpo_scale: report raw / 26 (Flow-GRPO's training reward) instead of raw.
        device, dtype, batch_size: see :class:`~tdm_r1.rewards.model_reward.ModelReward`.
    """

    name = "pickscore"
    base_version = "1"
    higher_is_better = True
    scale = "PickScore raw = logit_scale.exp() * cosine(text, image) (~100 * cosine; SD3.5-M ~21.7-22.3)"
    weight_files = (MODEL, PROCESSOR)

    def __init__(
        self,
        model_path: str | Path | None = None,
        processor_path: str | Path | None = None,
        flowgrpo_scale: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        batch_size: int = 16,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        model_dir = resolve(MODEL, model_path)
        processor_dir = resolve(PROCESSOR, processor_path)
        self.clip = HFClip(model_dir, processor_dir, device=self.device, dtype=self.dtype)
        self.divisor = FLOWGRPO_DIVISOR if flowgrpo_scale else 1.0
        if flowgrpo_scale:
            self.scale = "PickScore raw / 26 (Flow-GRPO training reward; raw = logit_scale.exp() * cosine)"

    def version_suffix(self) -> str:
        return "+flowgrpo26" if self.divisor != 1.0 else ""

    def score_batch(
        self, images: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = l2_normalize(self.clip.image_embeds(images))
        text = l2_normalize(self.clip.text_embeds(prompts))
        cosine = (image * text).sum(dim=-1)
        raw = self.clip.model.logit_scale.float().exp() * cosine
        return raw / self.divisor, {"cosine": cosine}
