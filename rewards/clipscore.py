"""CLIPScore, Flow-GRPO convention: cosine(text, image) under OpenAI CLIP ViT-L/14.

Flow-GRPO / DiffusionNFT report ``logits_per_image.diagonal() / 100`` with
``openai/clip-vit-large-patch14``, i.e. the plain cosine (SD3.5-M about 0.29). Other peers use
other CLIPs (DFN5B ViT-H-14), so numbers are comparable only within one CLIP. ``w=2.5`` gives
the CLIPScore paper's ``w * max(cos, 0)`` under its own version id.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tdm_r1.errors import ConfigError
from tdm_r1.registry import register_reward
from tdm_r1.rewards.clip_backbone import MODEL_PATTERNS, HFClip, l2_normalize
from tdm_r1.rewards.model_reward import ModelReward
from tdm_r1.weights import WeightFile, declare, resolve

MODEL = WeightFile(
    key="clipscore.model",
    hub_id="openai/clip-vit-large-patch14",
    filename=None,
    size="1.7 GB",
    env="TDMBENCH_CLIPSCORE_MODEL",
    option="--reward-option clipscore.model_path",
    description="OpenAI CLIP ViT-L/14 (transformers CLIPModel folder with its processor files)",
    patterns=MODEL_PATTERNS,
)
declare(MODEL)


@register_reward("clipscore", aliases=("clip-score",))
class ClipScore(ModelReward):
    """Cosine similarity of OpenAI CLIP ViT-L/14 text and image embeddings.

    Args:
        model_path: local folder of ``openai/clip-vit-large-patch14`` (model + processor files).
        w: if given, report the CLIPScore paper's ``w * max(cos, 0)`` (paper: w=2.5).
        device, dtype, batch_size: see :class:`~tdm_r1.rewards.model_reward.ModelReward`.
    """

    name = "clipscore"
    base_version = "1"
    higher_is_better = True
    scale = (
        "cosine(text, image) of OpenAI CLIP ViT-L/14 (openai/clip-vit-large-patch14), in [-1,1], "
        "not x100 (Flow-GRPO convention; SD3.5-M ~0.29)"
    )
    weight_files = (MODEL,)

    def __init__(
        self,
        model_path: str | Path | None = None,
        w: float | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        batch_size: int = 16,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        if w is not None and not float(w) > 0:
            raise ConfigError(f"clipscore: w must be > 0 (the CLIPScore paper uses 2.5), got {w}")
        model_dir = resolve(MODEL, model_path)
        self.clip = HFClip(model_dir, device=self.device, dtype=self.dtype)
        self.w = None if w is None else float(w)
        if self.w is not None:
            self.scale = f"{self.w:g} * max(cosine, 0) of OpenAI CLIP ViT-L/14 (CLIPScore paper form)"

    def version_suffix(self) -> str:
        return "" if self.w is None else f"+paper-w{self.w:g}"

    def score_batch(
        self, images: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = l2_normalize(self.clip.image_embeds(images))
        text = l2_normalize(self.clip.text_embeds(prompts))
        cosine = (image * text).sum(dim=-1)
        if self.w is None:
            return cosine, {}
        return self.w * cosine.clamp(min=0.0), {"cosine": cosine}
