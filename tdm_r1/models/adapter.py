"""The trainable flow-model adapter: one interface over a diffusers text-to-image flow model.

One frozen diffusers transformer carries several LoRA roles (:mod:`tdm_r1.models.roles`);
``role=None`` disables all adapters and gives the frozen base (teacher / reference). Families
subclass :class:`FlowAdapter` and implement ``_encode`` (text encoders -> one
:class:`~tdm_r1.models.conditioning.Conditioning` row per prompt) and ``_forward`` (raw
transformer call -> velocity in tdmbench's convention ``v = noise - x0``). Prompt caching lives in
:mod:`tdm_r1.models.prompt_cache`, the VAE in :mod:`tdm_r1.models.vae`, device and dtype defaults
in :mod:`tdm_r1.devices`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tdm_r1.devices import move_module, resolve_device, resolve_dtype
from tdm_r1.errors import ConfigError, ShapeError, TdmError
from tdm_r1.models import vae as vae_ops
from tdm_r1.models.conditioning import Conditioning
from tdm_r1.models.families import prompt_tokens
from tdm_r1.models.prompt_cache import PromptCache
from tdm_r1.models.roles import LoraRoles
from tdm_r1.models.sampling import sample
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.schedule import FlowSchedule, calculate_shift, flow_schedule

log = logging.getLogger(__name__)

_DEFAULT = object()


class FlowAdapter:
    """A flow-matching text-to-image model behind one interface (see the module docstring).

    Subclasses set ``family`` and ``DEFAULT_LORA_TARGETS`` and implement :meth:`_encode`,
    :meth:`_forward` and :meth:`text_encoder_modules`.

    Args:
        transformer: the diffusers transformer (frozen here; LoRA roles are added on top).
        vae: the diffusers ``AutoencoderKL``.
        preset: the preset this adapter was loaded from (identity for ``config_dict``), or None.
        sampling: generation defaults (else ``preset.sampling``).
        device, dtype: where and in which dtype the transformer runs (defaults: ``tdm_r1.devices``).
        offload_text_encoders: keep text encoders on the CPU, moving them to ``device`` only to
            encode prompts that are not cached yet (they are the largest components).
        vae_channels_last: keep the VAE in channels-last memory format (same math; may speed up
            its convolutions on GPUs: ``benchmarks/perf/generation.py`` measures both).
        scheduler_config: the pipeline's scheduler config (dynamic shifting, shift check).
    """

    family: ClassVar[str] = "?"
    DEFAULT_LORA_TARGETS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        transformer: nn.Module,
        vae: nn.Module | None,
        preset: Any = None,
        sampling: SamplingSpec | None = None,
        device: Any = None,
        dtype: Any = None,
        offload_text_encoders: bool = False,
        vae_channels_last: bool = False,
        scheduler_config: dict[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, getattr(preset, "dtype", "bfloat16"))
        self.preset = preset
        if sampling is None:
            if preset is None:
                raise ConfigError("FlowAdapter needs `sampling` or a `preset` to take sampling defaults from")
            sampling = preset.sampling
        self.sampling: SamplingSpec = sampling
        self.transformer = transformer
        self.vae = vae
        self.scheduler_config = dict(scheduler_config or {})
        self.prompt_cache = PromptCache(
            self._encode, self.text_encoder_modules, owner=type(self).__name__, offload=offload_text_encoders
        )
        self.roles = LoraRoles(transformer, family=self.family, default_targets=self.DEFAULT_LORA_TARGETS)
        for module in (transformer, vae):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
                move_module(module, self.device, self.dtype)
        self.set_vae_channels_last(vae_channels_last)
        self._check_scheduler_shift()

    # -- subclass hooks ----------------------------------------------------------------------------
    def _encode(self, prompts: list[str]) -> list[Conditioning]:
        """Encode prompts with the text encoders (on ``self.device``); one row per prompt."""
        raise NotImplementedError

    def _forward(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Raw transformer call; returns the velocity ``noise - x0``, (N, C, h, w)."""
        raise NotImplementedError

    def text_encoder_modules(self) -> list[nn.Module]:
        """The text encoders (for offloading)."""
        return []

    @property
    def patch_size(self) -> int:
        return int(getattr(self.transformer.config, "patch_size", 2))

    # -- identity ----------------------------------------------------------------------------------
    def text_tokens(self) -> dict[str, Any]:
        """Text tokens per prompt this adapter encodes with (:func:`tdm_r1.models.families.prompt_tokens`)."""
        return prompt_tokens(self.family, {"max_sequence_length": getattr(self, "max_sequence_length", None)})

    def config_dict(self, role: Any = _DEFAULT) -> dict[str, Any]:
        """JSON-able identity for cache keys: preset, sampling, dtype, text tokens and a digest of the LoRA used.

        On the meta device (no weights yet) the digest reads ``"no weights (meta)"``.
        """
        role = self._default_role() if role is _DEFAULT else role
        preset = self.preset
        return {
            "adapter": type(self).__name__,
            "family": self.family,
            "preset": getattr(preset, "name", None),
            "hub_id": getattr(preset, "hub_id", None),
            "dtype": str(self.dtype).replace("torch.", ""),
            "sampling": dataclasses.asdict(self.sampling),
            "text_tokens": self.text_tokens(),
            "role": role,
            "role_digest": self.roles.digest(role) if role is not None else None,
        }

    @property
    def nfe(self) -> int:
        """Transformer passes per image with the current sampling defaults."""
        return self.sampling.nfe

    # -- schedules ---------------------------------------------------------------------------------
    def schedule(
        self,
        steps: int | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        solver: str | None = None,
        shift: float | None = None,
        spacing: str | None = None,
    ) -> FlowSchedule:
        """The sampling schedule (pipeline scheduler config honoured: dynamic shifting)."""
        s = self.sampling.replace(
            steps=steps, height=height, width=width, solver=solver, shift=shift, spacing=spacing
        )
        mu = None
        cfg = self.scheduler_config
        if s.solver == "euler" and cfg.get("use_dynamic_shifting"):
            _, h, w = self.latent_shape(s.height, s.width)
            mu = calculate_shift(
                (h // self.patch_size) * (w // self.patch_size),
                cfg.get("base_image_seq_len", 256),
                cfg.get("max_image_seq_len", 4096),
                cfg.get("base_shift", 0.5),
                cfg.get("max_shift", 1.15),
            )
        return flow_schedule(s.steps, shift=s.shift, solver=s.solver, spacing=s.spacing, mu=mu)

    def _check_scheduler_shift(self) -> None:
        shift = self.scheduler_config.get("shift")
        if shift is not None and self.sampling.solver == "euler" and float(shift) != self.sampling.shift:
            log.warning(
                "%s: the pipeline's scheduler config says shift=%s but the preset samples with shift=%s",
                getattr(self.preset, "name", type(self).__name__),
                shift,
                self.sampling.shift,
            )

    # -- prompts -----------------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Conditioning for ``prompts`` on ``self.device``; cached by prompt text."""
        return self.prompt_cache.encode(prompts, self.device, self.dtype)

    def null_conditioning(self, n: int) -> Conditioning:
        """The empty-prompt conditioning (``""``, as the diffusers pipelines use for CFG), N rows."""
        return self.encode_prompts([""]).repeat(n)

    @property
    def offload(self) -> bool:
        """Whether the text encoders live on the CPU between prompt-cache misses."""
        return self.prompt_cache.offload

    def clear_prompt_cache(self) -> None:
        self.prompt_cache.clear()

    def offload_text_encoders(self) -> None:
        """Move the text encoders to the CPU now; later cache misses move them back temporarily."""
        self.prompt_cache.offload_now()

    # -- latents -----------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        return vae_ops.scale_factor(self.vae)

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the latent of an image of ``height`` x ``width`` pixels."""
        step = self.vae_scale_factor * self.patch_size
        if height % step or width % step or height <= 0 or width <= 0:
            raise ShapeError(
                f"{type(self).__name__}: height and width must be positive multiples of {step} "
                f"(VAE factor {self.vae_scale_factor} x patch {self.patch_size}), got {height}x{width}"
            )
        f = self.vae_scale_factor
        return (self.latent_channels, height // f, width // f)

    def initial_noise(self, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
        """(N, C, h, w) float32 Gaussian noise on the CPU, one ``torch.Generator`` per seed.

        Independent of batch composition and device: the same seed gives the same noise alone or
        in a batch (and the same as a diffusers pipeline given ``torch.Generator().manual_seed(seed)``).
        """
        shape = self.latent_shape(height, width)
        out = []
        for seed in seeds:
            gen = torch.Generator("cpu").manual_seed(int(seed))
            out.append(torch.randn(shape, generator=gen, dtype=torch.float32))
        return torch.stack(out)

    # -- the model ---------------------------------------------------------------------------------
    def velocity(
        self, x_t: torch.Tensor, sigma: torch.Tensor | float, cond: Conditioning, role: str | None = None
    ) -> torch.Tensor:
        """Velocity ``v = noise - x0`` at ``x_t = (1 - sigma) x0 + sigma noise``.

        Args:
            x_t: (N, C, h, w) latents.
            sigma: (N,) or scalar, in [0, 1].
            cond: conditioning for the N samples.
            role: LoRA role (None = frozen base). Differentiable w.r.t. that role's parameters.

        Returns:
            (N, C, h, w) in ``x_t``'s dtype.
        """
        n = x_t.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x_t.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(n)
        if sigma.shape != (n,):
            raise ShapeError(f"sigma must be a scalar or (N,) = ({n},), got {tuple(sigma.shape)}")
        if len(cond) != n:
            raise ShapeError(f"conditioning has {len(cond)} rows for a batch of {n}")
        with self.roles.use(role):
            v = self._forward(x_t.to(self.device), sigma.to(self.device), cond.to(self.device, self.dtype))
        return v.to(x_t.dtype)

    def set_vae_channels_last(self, enabled: bool) -> None:
        """Switch the VAE between channels-last and contiguous memory format."""
        self.vae_channels_last = enabled
        if self.vae is not None:
            vae_ops.set_channels_last(self.vae, enabled)

    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, H, W) float32 images in [0, 1]; see :func:`tdm_r1.models.vae.decode`."""
        return vae_ops.decode(
            self._require_vae(),
            latents,
            device=self.device,
            channels_last=self.vae_channels_last,
            batch_size=batch_size,
        )

    def encode_images(
        self,
        images: torch.Tensor,
        *,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] -> (N, C, h, w) latents; see :func:`tdm_r1.models.vae.encode`."""
        return vae_ops.encode(
            self._require_vae(),
            images,
            device=self.device,
            sample_posterior=sample_posterior,
            generator=generator,
        )

    def _require_vae(self) -> nn.Module:
        if self.vae is None:
            raise TdmError(f"{type(self).__name__} was built without a VAE")
        return self.vae

    # -- generation --------------------------------------------------------------------------------
    def _default_role(self) -> str | None:
        return "generator" if "generator" in self.roles else None

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        steps: int | None = None,
        guidance: float | None = None,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 8,
        role: Any = _DEFAULT,
        progress: bool = True,
    ) -> torch.Tensor:
        """Images for ``prompts`` with per-image ``seeds``: (N, 3, H, W) float32 in [0, 1], on the CPU.

        ``role`` defaults to ``"generator"`` when that role exists (a LoRA preset), else the base.
        Deterministic per seed: the same (prompt, seed) gives the same image alone or in a batch.
        """
        prompts = list(prompts)
        seeds = [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ConfigError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        role = self._default_role() if role is _DEFAULT else role
        spec = self.sampling.replace(steps=steps, guidance=guidance, height=height, width=width)
        schedule = self.schedule(spec.steps, height=spec.height, width=spec.width)
        out: list[torch.Tensor] = []
        starts = range(0, len(prompts), max(1, batch_size))
        if progress and len(prompts) > batch_size:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="generate", unit="batch")
        for start in starts:
            chunk_prompts = prompts[start : start + batch_size]
            chunk_seeds = seeds[start : start + batch_size]
            cond = self.encode_prompts(chunk_prompts)
            uncond = self.null_conditioning(len(chunk_prompts)) if spec.guidance != 1.0 else None
            noise = self.initial_noise(chunk_seeds, spec.height, spec.width).to(self.device)
            traj = sample(
                self,
                cond,
                noise,
                schedule,
                guidance=spec.guidance,
                uncond=uncond,
                role=role,
                cfg_renorm=spec.cfg_renorm,
                return_x0=False,
            )
            out.append(self.decode(traj.final).cpu())
        return torch.cat(out) if out else torch.zeros(0, 3, spec.height, spec.width)

    def to(self, device: Any) -> FlowAdapter:
        """Move transformer, VAE and (unless offloaded) text encoders."""
        self.device = torch.device(device)
        self.transformer.to(self.device)
        if self.vae is not None:
            self.vae.to(self.device)
        if not self.offload:
            for module in self.text_encoder_modules():
                module.to(self.device)
        return self

    # -- LoRA roles: the calls the trainer makes, kept here until it uses ``self.roles`` -----------
    def add_role(self, name: str, **kwargs: Any) -> None:
        """:meth:`LoraRoles.add <tdm_r1.models.roles.LoraRoles.add>`."""
        self.roles.add(name, **kwargs)

    def role_parameters(self, name: str) -> list[nn.Parameter]:
        return self.roles.parameters(name)

    def get_role_state(self, name: str, *, device: Any = None) -> list[torch.Tensor]:
        return self.roles.copies(name, device=device)

    def set_role_weights(
        self, name: str, tensors: Sequence[torch.Tensor], *, source: str = "tensors"
    ) -> None:
        self.roles.set_weights(name, tensors, source=source)

    def set_trainable(self, name: str, trainable: bool) -> None:
        self.roles.set_trainable(name, trainable)

    def save_role(self, name: str, directory: str | Path) -> Path:
        return self.roles.save(name, directory)

    def use_role(self, name: str | None) -> AbstractContextManager[None]:
        return self.roles.use(name)
