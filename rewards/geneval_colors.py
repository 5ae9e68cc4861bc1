"""GenEval's zero-shot colour classifier: CLIP ViT-L/14 over masked object crops.

Facts reproduced from GenEval (``evaluation/evaluate_images.py``): the 10 colours of
:data:`~tdm_r1.rewards.geneval.COLORS`; per object class, a text classifier built from the three
templates "a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object"
(each text embedding L2-normalised, averaged over templates, normalised again, as in
clip_benchmark's zero-shot classifier); each detection is shown to CLIP as the crop of its box
from the image in which every pixel outside its mask is grey ``#999999``; the colour is the
argmax of the cosine similarity. GenEval uses open_clip ``ViT-L-14`` with ``pretrained="openai"``;
here the same OpenAI weights are loaded through transformers ``CLIPModel``
(``openai/clip-vit-large-patch14``), whose image processor does the same resize (shortest side
224, bicubic), centre crop and normalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdm_r1.errors import MissingWeightsError
from tdm_r1.rewards.geneval import CLIP_WEIGHTS, COLORS
from tdm_r1.weights import resolve

log = logging.getLogger(__name__)

TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {cls}",
    "a photo of a {c}-colored {cls}",
    "a photo of a {c} object",
)
BACKGROUND = "#999999"


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected embedding."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def masked_crop(
    image: Any, box: Sequence[float], mask: np.ndarray | None, background: str = BACKGROUND
) -> Any:
    """The crop GenEval classifies: pixels outside ``mask`` (H, W bool) set to ``background``,
    then cropped to ``box`` [x0, y0, x1, y1] (PIL rounds the coordinates)."""
    from PIL import Image

    image = image.convert("RGB")
    if mask is not None:
        if tuple(mask.shape) != (image.height, image.width):
            raise ValueError(f"mask shape {mask.shape} does not match the image size {image.size[::-1]}")
        blank = Image.new("RGB", image.size, color=background)
        image = Image.composite(image, blank, Image.fromarray(np.asarray(mask, dtype=bool)))
    return image.crop(tuple(float(v) for v in box[:4]))


class ClipColorClassifier:
    """Zero-shot colour of object crops (GenEval's rule) with a transformers CLIP model.

    Args:
        clip_path: local ``save_pretrained`` folder of a CLIP model (model + tokenizer + image
            processor); default: resolve ``openai/clip-vit-large-patch14`` (see ``tdmbench weights``).
        device, dtype: where and how the model runs.
        batch_size: crops per forward pass.
    """

    def __init__(
        self,
        clip_path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
    ) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        path = resolve(CLIP_WEIGHTS, clip_path)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.batch_size = int(batch_size)
        try:
            self.model = CLIPModel.from_pretrained(path, dtype=dtype).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.processor = CLIPImageProcessor.from_pretrained(path)
        except OSError as exc:
            raise MissingWeightsError(
                f"{CLIP_WEIGHTS.description}: {path} is not a complete CLIP folder (model, tokenizer and "
                f"image processor from save_pretrained): {exc}"
            ) from exc
        self._check_tokenizer(path)
        self._text: dict[str, torch.Tensor] = {}

    def _check_tokenizer(self, path: Path) -> None:
        """Offline, a CLIP tokenizer can load "empty" and map every word to one id: refuse that."""
        unk = self.tokenizer.unk_token_id
        for color in COLORS:
            ids = self.tokenizer(color)["input_ids"][1:-1]
            if not ids or (unk is not None and unk in ids):
                raise MissingWeightsError(
                    f"the CLIP tokenizer in {path} cannot encode the colour word {color!r} (vocabulary of "
                    f"{len(self.tokenizer)} tokens): the tokenizer files are missing or wrong"
                )

    @torch.no_grad()
    def text_classifier(self, classname: str) -> torch.Tensor:
        """``(10, D)`` unit-norm colour embeddings for objects of ``classname`` (cached)."""
        if classname not in self._text:
            texts = [t.format(c=c, cls=classname) for c in COLORS for t in TEMPLATES]
            enc = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            emb = _features(self.model.get_text_features(**enc)).float()
            emb = torch.nn.functional.normalize(emb, dim=-1).reshape(len(COLORS), len(TEMPLATES), -1)
            self._text[classname] = torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)
        return self._text[classname]

    @torch.no_grad()
    def classify(
        self, image: Any, objects: Sequence[tuple[Sequence[float], np.ndarray | None]], classname: str
    ) -> list[str]:
        """Colour names for ``objects`` = ``[(box, mask or None), ...]`` of class ``classname``."""
        if not objects:
            return []
        clf = self.text_classifier(classname)
        crops = [masked_crop(image, box, mask) for box, mask in objects]
        out: list[str] = []
        for start in range(0, len(crops), self.batch_size):
            pixels = self.processor(images=crops[start : start + self.batch_size], return_tensors="pt")
            pv = pixels["pixel_values"].to(self.device, self.dtype)
            feats = torch.nn.functional.normalize(
                _features(self.model.get_image_features(pixel_values=pv)).float(), dim=-1
            )
            out.extend(COLORS[int(k)] for k in (feats @ clf.T).argmax(dim=-1))
        return out
