"""GenEval detector backend ``mask2former``: transformers Mask2Former Swin-S (COCO instances) + CLIP colours.

GenEval's official detector is the mmdet checkpoint of Mask2Former Swin-S (backend ``mmdet``).
This backend runs the same architecture from transformers
(``facebook/mask2former-swin-small-coco-instance``), which installs without compiling mmcv; its
scores are close to, not identical with, the official detector's (different checkpoint
conversion and preprocessing), so report which backend produced a number.

Post-processing mirrors mmdet's Mask2Former instance head: per image the top ``num_queries``
(query, class) pairs by class probability, score = class probability x mean mask probability
inside the binary mask, boxes = the tight box of the mask ``[x_min, y_min, x_max + 1, y_max + 1]``
(mmdet's ``mask2bbox``). Detections with an empty mask are dropped (their score is 0).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdm_r1.errors import MissingWeightsError
from tdm_r1.images import to_pil
from tdm_r1.rewards.geneval import MASK2FORMER_WEIGHTS, OBJECT_NAMES, Detection
from tdm_r1.weights import resolve

log = logging.getLogger(__name__)

#: COCO label spellings that differ from GenEval's object names.
LABEL_ALIASES: dict[str, str] = {
    "mouse": "computer mouse",
    "remote": "tv remote",
    "keyboard": "computer keyboard",
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "tvmonitor": "tv",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "hair dryer": "hair drier",
}


def geneval_label_names(id2label: dict[int, str]) -> list[str]:
    """Detector label names in GenEval spelling (unknown names are kept, and logged)."""
    names = []
    for i in range(len(id2label)):
        raw = str(id2label[i]).strip().lower().replace("_", " ")
        names.append(LABEL_ALIASES.get(raw, raw))
    unknown = [n for n in names if n not in OBJECT_NAMES]
    if unknown:
        log.warning("detector labels not among GenEval's 80 object names (never matched): %s", unknown[:10])
    return names


def mask_to_box(mask: torch.Tensor) -> list[float]:
    """Tight box ``[x0, y0, x1, y1]`` of a non-empty (H, W) boolean mask, x1/y1 exclusive."""
    ys = torch.nonzero(mask.any(dim=1)).flatten()
    xs = torch.nonzero(mask.any(dim=0)).flatten()
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)]


class Mask2FormerDetector:
    """Mask2Former instance segmentation + CLIP colour classification (see the module docstring).

    Args:
        device: torch device.
        min_score: detections scoring below this are dropped (the reward passes its lowest threshold).
        detector_path: local ``save_pretrained`` folder of a ``Mask2FormerForUniversalSegmentation``
            with its image processor (default: resolve the hub copy, see ``tdmbench weights list``).
        clip_path: local CLIP folder for the colour classifier (default: resolve the hub copy).
        max_objects: colours are classified for at most this many best detections per class.
        batch_size: images per detector forward pass.
    """

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        min_score: float = 0.3,
        detector_path: str | Path | None = None,
        clip_path: str | Path | None = None,
        max_objects: int = 16,
        batch_size: int = 4,
    ) -> None:
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        from tdm_r1.rewards.geneval_colors import ClipColorClassifier

        path = resolve(MASK2FORMER_WEIGHTS, detector_path)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        try:
            self.model = Mask2FormerForUniversalSegmentation.from_pretrained(path).to(self.device).eval()
            self.processor = Mask2FormerImageProcessor.from_pretrained(path)
        except OSError as exc:
            raise MissingWeightsError(
                f"{MASK2FORMER_WEIGHTS.description}: {path} is not a complete Mask2Former folder (model and "
                f"image processor from save_pretrained): {exc}"
            ) from exc
        self.labels = geneval_label_names(self.model.config.id2label)
        self.min_score = float(min_score)
        self.max_objects = int(max_objects)
        self.batch_size = int(batch_size)
        self.colors = ClipColorClassifier(clip_path, device=self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[list[Detection]]:
        """Detections per image; colours set for classes an include clause asks a colour of."""
        out: list[list[Detection]] = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size]
            meta = metadata[start : start + self.batch_size]
            pils = to_pil(batch)
            inputs = self.processor(images=pils, return_tensors="pt")
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
            sizes = [(im.height, im.width) for im in pils]
            results = self.processor.post_process_instance_segmentation(
                outputs, threshold=self.min_score, target_sizes=sizes, return_binary_maps=True
            )
            for pil, m, res in zip(pils, meta, results, strict=True):
                out.append(self._detections(pil, m, res))
        return out

    def _detections(self, pil: Any, meta: dict[str, Any], res: dict[str, Any]) -> list[Detection]:
        segments = res["segments_info"]
        maps = res["segmentation"]
        dets: list[Detection] = []
        masks: list[torch.Tensor] = []
        for k, seg in enumerate(segments):
            mask = maps[k].bool()
            if not bool(mask.any()):
                continue
            dets.append(
                {
                    "class": self.labels[int(seg["label_id"])],
                    "box": mask_to_box(mask),
                    "score": float(seg["score"]),
                    "color": None,
                }
            )
            masks.append(mask)
        wanted = {str(r["class"]) for r in meta.get("include", []) if "color" in r}
        for cls in sorted(wanted):
            idx = [i for i, d in enumerate(dets) if d["class"] == cls]
            idx = sorted(idx, key=lambda i: -dets[i]["score"])[: self.max_objects]
            objects = [(dets[i]["box"], masks[i].cpu().numpy().astype(np.bool_)) for i in idx]
            for i, color in zip(idx, self.colors.classify(pil, objects, cls), strict=True):
                dets[i]["color"] = color
        return sorted(dets, key=lambda d: -d["score"])
