"""Shared plumbing of the transformers-CLIP rewards (pickscore, clipscore, aesthetic).

:class:`HFClip` loads a ``CLIPModel`` and its processor from local folders (resolved from
:class:`~tdm_r1.weights.WeightFile` declarations by the rewards) and computes batched image and
text embeddings from float image tensors and prompt strings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tdm_r1.errors import ConfigError, MissingWeightsError
from tdm_r1.rewards.preprocess import ImagePreprocess

log = logging.getLogger(__name__)

#: Files of a transformers CLIP model / processor folder (what a download fetches).
MODEL_PATTERNS: tuple[str, ...] = ("*.json", "*.txt", "*.safetensors")
PROCESSOR_PATTERNS: tuple[str, ...] = ("*.json", "*.txt")


def pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers < 5) or an output with ``pooler_output``."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm, in float32. (N,D) -> (N,D)."""
    x = x.float()
    return x / x.norm(p=2, dim=-1, keepdim=True)


class HFClip:
    """A transformers ``CLIPModel`` + tokenizer + image preprocessing, in eval mode.

    Args:
        model_dir: folder with ``config.json`` and weights (``save_pretrained`` layout).
        processor_dir: folder with the processor (tokenizer files + ``preprocessor_config.json``);
            defaults to ``model_dir``.
        device, dtype: where and in which dtype the model runs.
        need_text: load the tokenizer (False for image-only use such as the aesthetic reward).
    """

    def __init__(
        self,
        model_dir: str | Path,
        processor_dir: str | Path | None = None,
        *,
        device: torch.device,
        dtype: torch.dtype,
        need_text: bool = True,
    ) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        model_dir = Path(model_dir)
        processor_dir = Path(processor_dir) if processor_dir is not None else model_dir
        for folder, what in ((model_dir, "CLIP model"), (processor_dir, "CLIP processor")):
            if not folder.is_dir():
                raise MissingWeightsError(f"{what} folder {folder} does not exist or is not a folder")
        try:
            self.model = CLIPModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        except OSError as exc:
            raise MissingWeightsError(
                f"could not load a transformers CLIPModel from {model_dir}: {exc}. The folder must hold "
                "config.json and model.safetensors (or pytorch_model.bin), as save_pretrained writes them."
            ) from exc
        self.model.requires_grad_(False)
        self.device = device
        self.dtype = dtype
        try:
            image_processor = AutoImageProcessor.from_pretrained(processor_dir)
        except OSError as exc:
            raise MissingWeightsError(
                f"could not load the CLIP image processor from {processor_dir}: {exc} "
                "(expected preprocessor_config.json)"
            ) from exc
        self.preprocess = ImagePreprocess.from_hf(image_processor)
        expected_px = self.model.config.vision_config.image_size
        if self.preprocess.crop != expected_px:
            raise ConfigError(
                f"processor in {processor_dir} crops to {self.preprocess.crop} px but the model in "
                f"{model_dir} expects {expected_px} px: the two folders do not belong together"
            )
        self.tokenizer = None
        if need_text:
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(processor_dir)
            except OSError as exc:
                raise MissingWeightsError(
                    f"could not load the CLIP tokenizer from {processor_dir}: {exc}"
                ) from exc
            vocab = self.model.config.text_config.vocab_size
            # Offline, a tokenizer with missing files can load as a near-empty vocabulary
            # (every word -> one id) instead of raising; its size gives it away.
            if len(self.tokenizer) != vocab:
                raise MissingWeightsError(
                    f"the tokenizer in {processor_dir} has {len(self.tokenizer)} tokens but the CLIP text "
                    f"model expects {vocab}: tokenizer files (vocab.json, merges.txt) are missing or wrong"
                )
            self.context_length = int(self.model.config.text_config.max_position_embeddings)

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) float [0,1] -> projected image embeddings (N,D), float32, not normalised."""
        pixels = self.preprocess(images, device=self.device, dtype=self.dtype)
        return pooled(self.model.get_image_features(pixel_values=pixels)).float()

    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """N prompts -> projected text embeddings (N,D), float32, not normalised (77-token truncation)."""
        if self.tokenizer is None:
            raise ConfigError("this HFClip was loaded with need_text=False")
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        out = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
        )
        return pooled(out).float()
