"""Stable Diffusion 3 / 3.5 behind :class:`~tdm_r1.models.adapter.FlowAdapter`.

Mirrors ``diffusers.StableDiffusion3Pipeline``: two CLIP text encoders (penultimate hidden states,
concatenated, zero-padded to the T5 width, plus their pooled projections) and T5 tokens appended;
without a T5 encoder the T5 part is zeros, as in diffusers. The transformer is told the timestep
``1000 * sigma`` and predicts the velocity ``noise - x0`` directly (tdmbench's convention).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tdm_r1.devices import move_module, resolve_device, resolve_dtype
from tdm_r1.models.adapter import FlowAdapter
from tdm_r1.models.conditioning import Conditioning
from tdm_r1.models.families import family_text, pipeline_dtype_kwarg
from tdm_r1.models.preset import SD3_LORA_TARGETS


class SD3Adapter(FlowAdapter):
    """SD3 / SD3.5 (``SD3Transformer2DModel``, CLIP-L + CLIP-G (+ T5-XXL) text encoders, 16-ch VAE).

    Args:
        text_encoder, text_encoder_2: ``CLIPTextModelWithProjection`` (or None to run without text encoders).
        text_encoder_3: ``T5EncoderModel`` or None (zeros, like diffusers).
        tokenizer, tokenizer_2, tokenizer_3: matching tokenizers.
        max_sequence_length: T5 tokens; None = the family's (``families.SD3_TEXT``: 128, what TDM-R1 /
            Flow-GRPO encode with; diffusers' pipeline default 256 is not used unless asked for).
        **kwargs: see :class:`FlowAdapter`.
    """

    family = "sd3"
    DEFAULT_LORA_TARGETS = SD3_LORA_TARGETS

    def __init__(
        self,
        *,
        transformer: nn.Module,
        vae: nn.Module | None,
        text_encoder: nn.Module | None = None,
        text_encoder_2: nn.Module | None = None,
        text_encoder_3: nn.Module | None = None,
        tokenizer: Any = None,
        tokenizer_2: Any = None,
        tokenizer_3: Any = None,
        max_sequence_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(transformer=transformer, vae=vae, **kwargs)
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.text_encoder_3 = text_encoder_3
        self.tokenizer = tokenizer
        self.tokenizer_2 = tokenizer_2
        self.tokenizer_3 = tokenizer_3
        self.max_sequence_length = (
            family_text(self.family).max_sequence_length
            if max_sequence_length is None
            else max_sequence_length
        )
        for module in self.text_encoder_modules():
            module.requires_grad_(False)
            module.eval()
            move_module(module, torch.device("cpu") if self.offload else self.device, self.dtype)

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> SD3Adapter:
        """Wrap the components of a ``StableDiffusion3Pipeline``."""
        return cls(
            transformer=pipe.transformer,
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            text_encoder_2=pipe.text_encoder_2,
            text_encoder_3=pipe.text_encoder_3,
            tokenizer=pipe.tokenizer,
            tokenizer_2=pipe.tokenizer_2,
            tokenizer_3=pipe.tokenizer_3,
            scheduler_config=dict(pipe.scheduler.config),
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, source: str | Path, *, device: Any = None, dtype: Any = None, **kwargs: Any
    ) -> SD3Adapter:
        """Load a ``StableDiffusion3Pipeline`` folder or hub id (a missing T5 in ``model_index.json`` is allowed)."""
        from diffusers import StableDiffusion3Pipeline

        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev, getattr(kwargs.get("preset"), "dtype", "bfloat16"))
        extra = _absent_components(
            source, ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
        )
        pipe = StableDiffusion3Pipeline.from_pretrained(
            str(source), **pipeline_dtype_kwarg(torch_dtype), **extra
        )
        return cls.from_pipeline(pipe, device=dev, dtype=torch_dtype, **kwargs)

    def text_encoder_modules(self) -> list[nn.Module]:
        return [m for m in (self.text_encoder, self.text_encoder_2, self.text_encoder_3) if m is not None]

    # -- text ------------------------------------------------------------------------------------
    def _clip(self, prompts: list[str], index: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer = (self.tokenizer, self.tokenizer_2)[index]
        encoder = (self.text_encoder, self.text_encoder_2)[index]
        ids = tokenizer(
            prompts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        out = encoder(ids.to(encoder.device), output_hidden_states=True)
        return out.hidden_states[-2], out[0]  # penultimate layer (N, 77, d), pooled projection (N, p)

    def _t5(self, prompts: list[str], n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        width = int(self.transformer.config.joint_attention_dim)
        if self.text_encoder_3 is None:
            return torch.zeros(n, self.max_sequence_length, width, device=device, dtype=dtype)
        ids = self.tokenizer_3(
            prompts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder_3(ids.to(self.text_encoder_3.device))[0]

    def _encode(self, prompts: list[str]) -> list[Conditioning]:
        if self.text_encoder is None or self.text_encoder_2 is None:
            raise ValueError("SD3Adapter needs both CLIP text encoders to encode prompts")
        h1, p1 = self._clip(prompts, 0)
        h2, p2 = self._clip(prompts, 1)
        clip = torch.cat([h1, h2], dim=-1)
        t5 = self._t5(prompts, len(prompts), clip.device, clip.dtype).to(clip.dtype)
        clip = nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        embeds = torch.cat([clip, t5], dim=-2)
        pooled = torch.cat([p1, p2], dim=-1)
        cond = Conditioning(embeds=embeds.to(self.dtype), pooled=pooled.to(self.dtype))
        return [cond[i] for i in range(len(prompts))]

    # -- model -----------------------------------------------------------------------------------
    def _forward(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if cond.pooled is None:
            raise ValueError("SD3 conditioning needs pooled embeddings")
        return self.transformer(
            hidden_states=x_t.to(self.dtype),
            timestep=sigma.float() * 1000.0,
            encoder_hidden_states=cond.embeds,
            pooled_projections=cond.pooled,
            return_dict=False,
        )[0]


def _absent_components(source: str | Path, names: tuple[str, ...]) -> dict[str, None]:
    """``{name: None}`` for components a local ``model_index.json`` lists as ``[null, null]``.

    diffusers' ``from_pretrained`` refuses a folder whose index lists a component as null unless
    the caller passes it explicitly; this is how a pipeline saved without T5 loads back.
    """
    index_path = Path(source) / "model_index.json"
    if not index_path.is_file():
        return {}
    index = json.loads(index_path.read_text())
    return {n: None for n in names if n in index and (index[n] is None or index[n] == [None, None])}
