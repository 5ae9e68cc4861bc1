"""GenEval detector backend ``mmdet``: the official Mask2Former Swin-S checkpoint through mmdet 3.x.

This is GenEval's own detector (config ``mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco``, the
mmdet 3.x name of GenEval's ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``), with the CLIP
ViT-L/14 colour classifier of :mod:`tdm_r1.rewards.geneval_colors`. It needs the optional extra
``tdmbench[mmdet]`` and mmcv 2.1.0 compiled from source: see ``docs/geneval-mmdet.md``. The
checkpoint is not on the Hugging Face hub; download it from :data:`CHECKPOINT_URL` and pass
``geneval.checkpoint=PATH`` (or set ``$TDMBENCH_GENEVAL_MMDET_CKPT``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdm_r1.deps import require
from tdm_r1.errors import MissingWeightsError
from tdm_r1.images import to_pil, to_uint8_nhwc
from tdm_r1.rewards.geneval_rules import OBJECT_NAMES, Detection

log = logging.getLogger(__name__)

CONFIG_NAME = "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco"
CHECKPOINT_URL = (
    "https://download.openmmlab.com/mmdetection/v3.0/mask2former/"
    "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco/"
    "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth"
)
CHECKPOINT_ENV = "TDMBENCH_GENEVAL_MMDET_CKPT"


def _config_path(mmdet: Any) -> Path:
    """The detector config shipped inside the mmdet wheel (``mmdet/.mim/configs``)."""
    root = Path(mmdet.__file__).parent
    for candidate in (root / ".mim" / "configs", root.parent / "configs"):
        path = candidate / "mask2former" / f"{CONFIG_NAME}.py"
        if path.is_file():
            return path
    raise MissingWeightsError(
        f"mmdet at {root} does not ship configs/mask2former/{CONFIG_NAME}.py; install mmdet>=3.3 from the "
        "package index (its wheel contains the configs), see docs/geneval-mmdet.md"
    )


class MmdetDetector:
    """The official GenEval detector (mmdet) + CLIP colours.

    Args:
        device: torch device.
        min_score: detections scoring below this are dropped.
        checkpoint: path of the mmdet checkpoint (``.pth``; default ``$TDMBENCH_GENEVAL_MMDET_CKPT``).
        clip_path: local CLIP folder for the colour classifier.
        max_objects: colours are classified for at most this many best detections per class.
    """

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        min_score: float = 0.3,
        checkpoint: str | Path | None = None,
        clip_path: str | Path | None = None,
        max_objects: int = 16,
    ) -> None:
        purpose = "the GenEval 'mmdet' detector backend"
        mmdet = require("mmdet", purpose=purpose)
        require("mmcv", purpose=purpose)
        from mmdet.apis import inference_detector, init_detector

        from tdm_r1.rewards.geneval_colors import ClipColorClassifier

        ckpt = checkpoint or os.environ.get(CHECKPOINT_ENV)
        if not ckpt or not Path(ckpt).is_file():
            raise MissingWeightsError(
                f"the official GenEval detector checkpoint is missing ({ckpt or 'not given'}). Download "
                f"{CHECKPOINT_URL} and pass geneval.checkpoint=PATH or set ${CHECKPOINT_ENV}=PATH"
            )
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._inference = inference_detector
        self.model = init_detector(str(_config_path(mmdet)), str(ckpt), device=str(self.device))
        classes = list(self.model.dataset_meta.get("classes", ()))
        if len(classes) != len(OBJECT_NAMES):
            raise MissingWeightsError(
                f"the mmdet model has {len(classes)} classes, GenEval expects the 80 COCO classes"
            )
        self.min_score = float(min_score)
        self.max_objects = int(max_objects)
        self.colors = ClipColorClassifier(clip_path, device=self.device)
        #: The config's own test pipeline resizes to (1333, 800) keep-ratio: the official scale.
        self.identity = "s800x1333"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, metadata: list[dict[str, Any]]) -> list[list[Detection]]:
        arrays = to_uint8_nhwc(images)
        pils = to_pil(images)
        out: list[list[Detection]] = []
        for arr, pil, meta in zip(arrays, pils, metadata, strict=True):
            # mmdet reads numpy images as BGR (OpenCV convention).
            result = self._inference(self.model, np.ascontiguousarray(arr[..., ::-1]))
            inst = result.pred_instances
            scores = inst.scores.cpu().numpy()
            labels = inst.labels.cpu().numpy()
            boxes = inst.bboxes.cpu().numpy()
            masks = inst.masks.cpu().numpy() if "masks" in inst else None
            dets: list[Detection] = []
            det_masks: list[np.ndarray | None] = []
            for k in np.argsort(-scores, kind="stable"):
                if scores[k] < self.min_score:
                    continue
                dets.append(
                    {
                        "class": OBJECT_NAMES[int(labels[k])],
                        "box": [float(v) for v in boxes[k][:4]],
                        "score": float(scores[k]),
                        "color": None,
                    }
                )
                det_masks.append(None if masks is None else masks[k].astype(np.bool_))
            wanted = {str(r["class"]) for r in meta.get("include", []) if "color" in r}
            for cls in sorted(wanted):
                idx = [i for i, d in enumerate(dets) if d["class"] == cls][: self.max_objects]
                objects = [(dets[i]["box"], det_masks[i]) for i in idx]
                for i, color in zip(idx, self.colors.classify(pil, objects, cls), strict=True):
                    dets[i]["color"] = color
            out.append(dets)
        return out
