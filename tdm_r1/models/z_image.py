"""Z-Image (Tongyi-MAI, 6B single-stream DiT) behind :class:`~tdm_r1.models.adapter.FlowAdapter`.

Mirrors ``diffusers.ZImagePipeline`` and hides its quirks:

* the transformer takes *lists* (one (C, 1, h, w) latent and one (L_i, D) caption tensor per
  sample: captions keep only their real tokens) and returns a list;
* it is told ``t = (1000 - 1000 sigma) / 1000 = 1 - sigma`` and predicts ``x0 - noise``, which the
  pipeline negates before the Euler step: tdmbench's velocity is the negated output;
* prompts go through the Qwen chat template and the text encoder's second-to-last hidden states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tdm_r1.devices import move_module, resolve_device, resolve_dtype
from tdm_r1.models.adapter import FlowAdapter
from tdm_r1.models.conditioning import Conditioning
from tdm_r1.models.families import family_text, pipeline_dtype_kwarg
from tdm_r1.models.preset import Z_IMAGE_LORA_TARGETS


class ZImageAdapter(FlowAdapter):
    """Z-Image / Z-Image-Turbo (``ZImageTransformer2DModel``, Qwen3 text encoder, 16-ch FLUX VAE).

    Args:
        text_encoder: the Qwen3 model (or None to run without a text encoder).
        tokenizer: its tokenizer (needs a chat template).
        max_sequence_length: token limit per prompt; None = the family's (``families.Z_IMAGE_TEXT``:
            512, diffusers' default). Only real tokens are kept.
        **kwargs: see :class:`FlowAdapter`.
    """

    family = "z-image"
    DEFAULT_LORA_TARGETS = Z_IMAGE_LORA_TARGETS

    def __init__(
        self,
        *,
        transformer: nn.Module,
        vae: nn.Module | None,
        text_encoder: nn.Module | None = None,
        tokenizer: Any = None,
        max_sequence_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(transformer=transformer, vae=vae, **kwargs)
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.max_sequence_length = (
            family_text(self.family).max_sequence_length
            if max_sequence_length is None
            else max_sequence_length
        )
        for module in self.text_encoder_modules():
            module.requires_grad_(False)
            module.eval()
            move_module(module, torch.device("cpu") if self.offload else self.device, self.dtype)

    @property
    def patch_size(self) -> int:
        return int(self.transformer.config.all_patch_size[0])

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> ZImageAdapter:
        """Wrap the components of a ``ZImagePipeline``."""
        return cls(
            transformer=pipe.transformer,
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            scheduler_config=dict(pipe.scheduler.config),
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, source: str | Path, *, device: Any = None, dtype: Any = None, **kwargs: Any
    ) -> ZImageAdapter:
        """Load a ``ZImagePipeline`` folder or hub id."""
        from diffusers import ZImagePipeline

        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev, getattr(kwargs.get("preset"), "dtype", "bfloat16"))
        pipe = ZImagePipeline.from_pretrained(str(source), **pipeline_dtype_kwarg(torch_dtype))
        return cls.from_pipeline(pipe, device=dev, dtype=torch_dtype, **kwargs)

    def text_encoder_modules(self) -> list[nn.Module]:
        return [self.text_encoder] if self.text_encoder is not None else []

    # -- text ------------------------------------------------------------------------------------
    def _encode(self, prompts: list[str]) -> list[Conditioning]:
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("ZImageAdapter needs its text encoder and tokenizer to encode prompts")
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}],
                tokenize=False,
                add_generation_prompt=True,
                enable_thinking=True,
            )
            for p in prompts
        ]
        # right padding to the longest prompt: the causal encoder's real tokens do not see the padding,
        # so this equals diffusers' padding to max_length, at a fraction of the cost
        tokens = self.tokenizer(
            texts,
            padding="longest",
            max_length=self.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        dev = self.text_encoder.device
        mask = tokens.attention_mask.to(dev).bool()
        hidden = self.text_encoder(
            input_ids=tokens.input_ids.to(dev), attention_mask=mask, output_hidden_states=True
        ).hidden_states[-2]
        rows = []
        for h, m in zip(hidden, mask, strict=True):
            e = h[m].to(self.dtype)
            rows.append(Conditioning(embeds=e.unsqueeze(0), mask=torch.ones(1, e.shape[0], dtype=torch.bool)))
        return rows

    # -- model -----------------------------------------------------------------------------------
    def _forward(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        t = (1000.0 - sigma.float() * 1000.0) / 1000.0  # the pipeline's "(1000 - t) / 1000"
        latents = list(x_t.to(self.dtype).unsqueeze(2).unbind(0))  # N x (C, 1, h, w)
        out = self.transformer(latents, t, cond.rows(), return_dict=False)[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)
