"""LAION improved aesthetic predictor (``sac+logos+ava1-l14-linearMSE``) on CLIP ViT-L/14.

score = MLP(image_embed / ||image_embed||), the MLP's raw output on the AVA rating scale (about
1-10; SD3.5-M on DrawBench about 5.4), with the image embedding from transformers
``CLIPModel.get_image_features`` of ``openai/clip-vit-large-patch14`` as in Flow-GRPO. The MLP
weights are the file of christophschuhmann/improved-aesthetic-predictor; the hub copy used here
is ``camenduru/improved-aesthetic-predictor`` (same file name).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tdm_r1.errors import ShapeError
from tdm_r1.registry import register_reward
from tdm_r1.rewards.clip_backbone import MODEL_PATTERNS, HFClip, l2_normalize
from tdm_r1.rewards.linear_mlp import load_linear_mlp
from tdm_r1.rewards.model_reward import ModelReward
from tdm_r1.weights import WeightFile, declare, resolve

CLIP = WeightFile(
    key="aesthetic.clip",
    hub_id="openai/clip-vit-large-patch14",
    filename=None,
    size="1.7 GB",
    env="TDMBENCH_AESTHETIC_CLIP",
    option="--reward-option aesthetic.clip_path",
    description="OpenAI CLIP ViT-L/14 image tower for the aesthetic predictor (transformers folder)",
    patterns=MODEL_PATTERNS,
)
MLP = WeightFile(
    key="aesthetic.mlp",
    hub_id="camenduru/improved-aesthetic-predictor",
    filename="sac+logos+ava1-l14-linearMSE.pth",
    size="3.7 MB",
    env="TDMBENCH_AESTHETIC_MLP",
    option="--reward-option aesthetic.mlp_path",
    description="LAION improved aesthetic predictor MLP (sac+logos+ava1-l14-linearMSE.pth)",
    # The file of christophschuhmann/improved-aesthetic-predictor (3,714,759 bytes). The issue
    # gives the prefix 21dd590f; the full value is the one that several independent public
    # projects pin for this file.
    sha256="21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
    sha256_source="christophschuhmann/improved-aesthetic-predictor, sac+logos+ava1-l14-linearMSE.pth",
)
declare(CLIP, MLP)


@register_reward("aesthetic", aliases=("laion-aesthetic",))
class Aesthetic(ModelReward):
    """LAION aesthetic score, raw MLP output.

    Args:
        clip_path: local folder of ``openai/clip-vit-large-patch14``.
        mlp_path: local ``sac+logos+ava1-l14-linearMSE.pth`` (or its folder).
        device, dtype, batch_size: see :class:`~tdm_r1.rewards.model_reward.ModelReward`.
    """

    name = "aesthetic"
    base_version = "1"
    higher_is_better = True
    scale = (
        "LAION improved-aesthetic MLP raw output on L2-normalised CLIP ViT-L/14 image embeddings "
        "(AVA rating scale ~1-10; SD3.5-M ~5.4)"
    )
    weight_files = (CLIP, MLP)

    def __init__(
        self,
        clip_path: str | Path | None = None,
        mlp_path: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        batch_size: int = 16,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        clip_dir = resolve(CLIP, clip_path)
        mlp_file = resolve(MLP, mlp_path)
        state = torch.load(mlp_file, map_location="cpu", weights_only=True)
        self.mlp = load_linear_mlp(state, source=str(mlp_file)).to(self.device)
        self.clip = HFClip(clip_dir, device=self.device, dtype=self.dtype, need_text=False)
        width = self.clip.model.config.projection_dim
        if width != self.mlp.layers[0].in_features:
            raise ShapeError(
                f"aesthetic MLP {mlp_file} takes {self.mlp.layers[0].in_features}-d embeddings but the CLIP "
                f"in {clip_dir} produces {width}-d ones (the predictor needs CLIP ViT-L/14, 768-d)"
            )

    def score_batch(
        self, images: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embed = l2_normalize(self.clip.image_embeds(images))
        return self.mlp(embed).squeeze(-1), {}
