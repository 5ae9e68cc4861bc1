"""HPS v2.1: cosine of L2-normalised open_clip ViT-H-14 image and text features.

The checkpoint ``xswu/HPSv2`` / ``HPS_v2.1_compressed.pt`` holds the complete fine-tuned
open_clip ViT-H-14 (both towers, ``logit_scale``) under a ``"state_dict"`` key, which HPSv2's
``img_score.py`` loads strictly into ``create_model_and_transforms("ViT-H-14", ...)``; the
laion2B pretrained weights are therefore not needed. The tokenizer is open_clip's ViT-H-14
tokenizer, whose BPE vocabulary ships inside the open_clip wheel (works offline). The score is
HPSv2's ``diag(image_features @ text_features.T)``, the plain cosine (about 0.27-0.37); the
HPS benchmark tables multiply it by 100.

Images are preprocessed as HPSv2's official ``preprocess_val`` does: longer side to 224 (bicubic),
black letterbox to a square, no crop (:class:`~tdm_r1.rewards.preprocess.LetterboxPreprocess`).
Version 1 centre-cropped instead, which matched only for square images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tdm_r1.deps import require
from tdm_r1.errors import ConfigError, ShapeError
from tdm_r1.registry import register_reward
from tdm_r1.rewards.checkpoints import load_torch_file, state_dict_mismatch, strip_prefix
from tdm_r1.rewards.model_reward import ModelReward
from tdm_r1.rewards.preprocess import CLIP_MEAN, CLIP_STD, LetterboxPreprocess
from tdm_r1.weights import WeightFile, declare, resolve

log = logging.getLogger(__name__)

CHECKPOINT = WeightFile(
    key="hpsv2.1.checkpoint",
    hub_id="xswu/HPSv2",
    filename="HPS_v2.1_compressed.pt",
    size="2-4 GB (986 M parameters; storage dtype not verified)",
    env="TDMBENCH_HPSV2_CHECKPOINT",
    option="--reward-option hps.checkpoint_path",
    description="HPS v2.1 checkpoint (full open_clip ViT-H-14 state dict)",
)
declare(CHECKPOINT)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns "initialized randomly" (root logger) when built without weights; the
    checkpoint is loaded right after, so the warning would mislead."""
    root = logging.getLogger()
    filt = _DropRandomInitWarning()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def load_open_clip_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> int:
    """Load ``state`` into the (meta-initialised) open_clip ``model`` strictly; return the key count.

    Raises :class:`ShapeError` listing missing / unexpected keys and shape mismatches, so that a
    checkpoint of another architecture fails with a readable message instead of loading partly.
    """
    missing, unexpected, wrong = state_dict_mismatch(model, state)
    n_model = len(model.state_dict())
    if missing or unexpected or wrong:
        raise ShapeError(
            f"{source} does not match the open_clip architecture ({len(state)} tensors in the file, "
            f"{n_model} in the model): {len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected "
            f"{unexpected[:8]}, {len(wrong)} of wrong shape {wrong[:5]}. HPS v2.1 needs arch='ViT-H-14'."
        )
    model.load_state_dict(dict(state), strict=True, assign=True)
    return n_model


@register_reward("hpsv2.1", aliases=("hps",))
class HPSv21(ModelReward):
    """Human Preference Score v2.1 (cosine scale).

    Args:
        checkpoint_path: local ``HPS_v2.1_compressed.pt`` (or its folder).
        arch: open_clip architecture name the checkpoint belongs to (``ViT-H-14``; tests register tiny ones).
        weights_only: load the checkpoint with ``torch.load(weights_only=True)`` (safe unpickling).
        device, dtype, batch_size: see :class:`~tdm_r1.rewards.model_reward.ModelReward`.
    """

    name = "hpsv2.1"
    base_version = "2"  # 2: official letterbox preprocessing (1 centre-cropped)
    higher_is_better = True
    scale = (
        "HPS v2.1 = cosine(text, image) of L2-normalised open_clip ViT-H-14 features (~0.27-0.37; "
        "the HPS benchmark tables show x100)"
    )
    weight_files = (CHECKPOINT,)

    def __init__(
        self,
        checkpoint_path: str | Path | None = None,
        arch: str = "ViT-H-14",
        weights_only: bool = True,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        batch_size: int = 16,
    ) -> None:
        super().__init__(device=device, dtype=dtype, batch_size=batch_size)
        ckpt_file = resolve(CHECKPOINT, checkpoint_path)
        open_clip = require("open_clip", purpose="the hpsv2.1 reward")
        from accelerate import init_empty_weights

        if arch not in open_clip.list_models():
            raise ConfigError(f"hpsv2.1: unknown open_clip architecture {arch!r} (HPS v2.1 uses 'ViT-H-14')")
        raw = load_torch_file(ckpt_file, weights_only=weights_only)
        state = raw["state_dict"] if isinstance(raw, Mapping) and "state_dict" in raw else raw
        if not isinstance(state, Mapping):
            raise ShapeError(f"{ckpt_file} holds a {type(state).__name__}, not a state dict")
        state = strip_prefix(state, "module.")
        # Parameters on the meta device (no random init of ~1e9 weights), buffers real;
        # the checkpoint's tensors are then assigned in place.
        with init_empty_weights(), _quiet_random_init_warning():
            model = open_clip.create_model(arch, pretrained=None, device=None)
        n = load_open_clip_state(model, state, source=str(ckpt_file))
        log.info("hpsv2.1: loaded %d tensors from %s", n, ckpt_file)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        cfg: dict[str, Any] = dict(getattr(model.visual, "preprocess_cfg", {}))
        # HPSv2 letterboxes whatever the architecture's resize_mode says; only bicubic is reproduced.
        if cfg.get("interpolation", "bicubic") != "bicubic":
            raise ConfigError(f"hpsv2.1: unsupported open_clip preprocessing {cfg}")
        size = model.visual.image_size
        side = int(size[0] if isinstance(size, tuple | list) else size)
        mean, std = tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))
        self.preprocess = LetterboxPreprocess(size=side, mean=mean, std=std)  # type: ignore[arg-type]

    def score_batch(
        self, images: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pixels = self.preprocess(images, device=self.device, dtype=self.dtype)
        tokens = self.tokenizer(prompts).to(self.device)
        image = self.model.encode_image(pixels, normalize=True).float()
        text = self.model.encode_text(tokens, normalize=True).float()
        return (image * text).sum(dim=-1), {}
