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

Detector input scale (option ``detector_scale``):

* ``"official"`` (default): what GenEval's mmdet test pipeline does, ``img_scale=(1333, 800)``
  with ``keep_ratio``: scale factor ``min(800 / short side, 1333 / long side)``, new side
  ``int(side * factor + 0.5)``, bilinear; ImageNet mean/std; zero padding at the bottom/right to a
  multiple of 32. A 512-px image is detected at 800 px. Mask logits are upsampled (bilinear) to the
  padded input, cropped to the resized image and resized (bilinear) to the image's own resolution
  before thresholding at 0.5, so masks, mask scores and boxes are at image resolution (mmdet's
  post-processing order).
* ``"SHORTxLONG"`` (e.g. ``"640x1066"``): the same with other limits.
* ``"processor"``: the checkpoint's own image processor (384 x 384 for the hub checkpoint, aspect
  ratio not kept) and transformers' post-processing (masks at 384 x 384, upsampled
  nearest-neighbour). This was the only behaviour before the option existed.

The default is the official scale because the official detector sees 800 px: the detector is
scale-sensitive (small objects and counts change with input size), so the scale that the
published numbers used is the one to reproduce; it costs about 4x the compute of 384 px. No
measurement against the mmdet checkpoint was possible here (its weights cannot be downloaded), so
"closer to the official numbers" is argued from the protocol, not measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tdm_r1.errors import ConfigError, MissingWeightsError
from tdm_r1.images import from_uint8_nhwc, to_pil, to_uint8_nhwc
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


#: GenEval's detector test scale: (shorter side, longer side limit) of mmdet's ``img_scale=(1333, 800)``.
OFFICIAL_SCALE: tuple[int, int] = (800, 1333)
SIZE_DIVISOR = 32


def parse_scale(value: str) -> tuple[int, int] | None:
    """``"official"`` -> (800, 1333); ``"SHORTxLONG"`` -> (SHORT, LONG); ``"processor"`` -> None."""
    text = str(value).strip().lower()
    if text == "official":
        return OFFICIAL_SCALE
    if text == "processor":
        return None
    short, sep, long = text.partition("x")
    try:
        pair = (int(short), int(long))
    except ValueError:
        pair = (0, 0)
    if not sep or min(pair) < 1 or pair[0] > pair[1]:
        raise ConfigError(
            f"geneval detector_scale={value!r}: use 'official' (800x1333), 'processor', or SHORTxLONG "
            "with SHORT <= LONG, e.g. 800x1333"
        )
    return pair


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmdet's keep-ratio rescale: factor ``min(short_limit / short, long_limit / long)``,
    sides ``int(side * factor + 0.5)``."""
    short_limit, long_limit = scale
    factor = min(short_limit / min(height, width), long_limit / max(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def padded_size(height: int, width: int, divisor: int = SIZE_DIVISOR) -> tuple[int, int]:
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def instance_postprocess(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, min_score: float
) -> dict[str, Any]:
    """One image: class logits (Q, C+1), mask logits (Q, H, W) at image resolution -> the
    ``{"segmentation": (K, H, W) bool, "segments_info": [{"label_id", "score"}]}`` of the
    detections scoring >= ``min_score`` with a non-empty mask (mmdet's instance post-processing:
    top-Q (query, class) pairs by class probability, score x mean mask probability)."""
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    probs = class_logits.softmax(dim=-1)[:, :-1]
    scores, flat = probs.flatten().topk(num_queries, sorted=False)
    labels, queries = flat % num_classes, torch.div(flat, num_classes, rounding_mode="floor")
    masks = mask_logits[queries]
    binary = masks > 0
    mask_score = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    final = scores * mask_score
    keep = [j for j in range(num_queries) if float(final[j]) >= min_score and bool(binary[j].any())]
    return {
        "segmentation": binary[keep],
        "segments_info": [{"label_id": int(labels[j]), "score": float(final[j])} for j in keep],
    }


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
        detector_scale: ``"official"`` (shorter side 800, longer at most 1333; default),
            ``"SHORTxLONG"`` or ``"processor"`` (see the module docstring).
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
        detector_scale: str = "official",
    ) -> None:
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        from tdm_r1.rewards.geneval_colors import ClipColorClassifier

        self.scale = parse_scale(detector_scale)
        #: Part of the reward's version: which input scale produced the detections.
        self.identity = "processor" if self.scale is None else f"s{self.scale[0]}x{self.scale[1]}"
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
            if self.scale is not None:
                results = self._detect_at_scale(batch, self.scale)
                for pil, m, res in zip(pils, meta, results, strict=True):
                    out.append(self._detections(pil, m, res))
                continue
            inputs = self.processor(images=pils, return_tensors="pt")
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
            sizes = [(im.height, im.width) for im in pils]
            results = self.processor.post_process_instance_segmentation(
                outputs, threshold=self.min_score, target_sizes=sizes, return_binary_maps=True
            )
            for pil, m, res in zip(pils, meta, results, strict=True):
                out.append(self._detections(pil, m, res))
        return out

    def _detect_at_scale(self, batch: torch.Tensor, scale: tuple[int, int]) -> list[dict[str, Any]]:
        """(B,3,H,W) [0,1] -> per image the detections at ``scale`` (see the module docstring)."""
        cfg = self.processor.to_dict()
        mean = torch.tensor(cfg.get("image_mean", (0.485, 0.456, 0.406)), dtype=torch.float32).view(
            1, 3, 1, 1
        )
        std = torch.tensor(cfg.get("image_std", (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1)
        height, width = batch.shape[-2:]
        new_h, new_w = rescale_size(height, width, scale)
        pad_h, pad_w = padded_size(new_h, new_w)
        x = from_uint8_nhwc(to_uint8_nhwc(batch))  # the uint8 image, as the detector would read it
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        x = F.pad((x - mean) / std, (0, pad_w - new_w, 0, pad_h - new_h))  # (B,3,pad_h,pad_w)
        outputs = self.model(pixel_values=x.to(self.device))
        results = []
        for i in range(batch.shape[0]):  # one image at a time: Q masks at 800 px are ~256 MB
            # mask logits (Q,pad_h/4,pad_w/4) -> padded input -> resized image -> image resolution
            masks = F.interpolate(
                outputs.masks_queries_logits[i : i + 1],
                size=(pad_h, pad_w),
                mode="bilinear",
                align_corners=False,
            )
            masks = F.interpolate(
                masks[..., :new_h, :new_w], size=(height, width), mode="bilinear", align_corners=False
            )
            results.append(instance_postprocess(outputs.class_queries_logits[i], masks[0], self.min_score))
        return results

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
