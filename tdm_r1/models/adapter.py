"""The trainable flow-model adapter: conditioning, velocity, VAE, LoRA roles, generation.

One frozen diffusers transformer carries several LoRA *roles* (``generator``, ``fake``,
``surrogate``, ...) through peft's multi-adapter support; ``role=None`` disables all adapters and
gives the frozen base (teacher / reference). Families subclass :class:`FlowAdapter` and implement
``_encode`` (text encoders -> one :class:`Conditioning` row per prompt) and ``_forward`` (raw
transformer call -> velocity in tdmbench's convention ``v = noise - x0``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tdm_r1.errors import ConfigError, ShapeError, TdmError
from tdm_r1.sampling import sample
from tdm_r1.schedule import FlowSchedule, calculate_shift, flow_schedule

log = logging.getLogger(__name__)

_DEFAULT = object()

#: ``init`` names of :meth:`FlowAdapter.add_role` -> peft ``init_lora_weights``.
LORA_INITS: dict[str, Any] = {
    "gaussian": "gaussian",  # A ~ N(0, 1/r), B = 0: starts equal to the base (TDM-R1's choice)
    "zeros": "gaussian",  # alias: "the LoRA's output starts at zero" (B = 0)
    "kaiming": True,  # peft default: A kaiming-uniform, B = 0
    "random": False,  # A and B random: output differs from the base at once (tests)
}


def resolve_dtype(dtype: Any, device: torch.device, default: str = "bfloat16") -> torch.dtype:
    """torch dtype from a dtype or a name; None -> ``default`` on accelerators, float32 on CPU."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else getattr(torch, default)
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


def resolve_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pipeline_dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": ...}`` for diffusers versions that renamed ``torch_dtype`` (it warns), else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


# ------------------------------------------------------------------------------------ conditioning
@dataclass
class Conditioning:
    """Text conditioning for a batch of N prompts.

    Attributes:
        embeds: (N, L, D) token embeddings.
        pooled: (N, P) pooled embeddings (SD3) or None.
        mask: (N, L) bool, True for real tokens, or None when every row uses all L tokens
            (Z-Image keeps only real tokens; rows of different lengths are right-padded).
    """

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.embeds.shape[0]
        if self.embeds.ndim != 3:
            raise ShapeError(f"Conditioning.embeds must be (N, L, D), got {tuple(self.embeds.shape)}")
        if self.pooled is not None and self.pooled.shape[0] != n:
            raise ShapeError(f"pooled has batch {self.pooled.shape[0]}, embeds {n}")
        if self.mask is not None and tuple(self.mask.shape) != tuple(self.embeds.shape[:2]):
            raise ShapeError(
                f"mask must be (N, L) = {tuple(self.embeds.shape[:2])}, got {tuple(self.mask.shape)}"
            )

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def device(self) -> torch.device:
        return self.embeds.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embeds.dtype

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> Conditioning:
        """Rows of the batch (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=self.embeds.device)
        return Conditioning(
            embeds=self.embeds[index],
            pooled=None if self.pooled is None else self.pooled[index],
            mask=None if self.mask is None else self.mask[index],
        ).trimmed()

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the batch; rows are right-padded (zeros, mask False) to the longest."""
        if not items:
            raise ShapeError("Conditioning.cat needs at least one item")
        length = max(c.embeds.shape[1] for c in items)
        has_pooled = {c.pooled is not None for c in items}
        if len(has_pooled) != 1:
            raise ShapeError("cannot concatenate conditionings with and without pooled embeddings")
        needs_mask = any(c.mask is not None for c in items) or len({c.embeds.shape[1] for c in items}) > 1
        embeds, masks = [], []
        for c in items:
            pad = length - c.embeds.shape[1]
            e = c.embeds
            m = c.mask if c.mask is not None else torch.ones(e.shape[:2], dtype=torch.bool, device=e.device)
            if pad:
                e = torch.cat([e, e.new_zeros(e.shape[0], pad, e.shape[2])], dim=1)
                m = torch.cat([m, m.new_zeros(m.shape[0], pad)], dim=1)
            embeds.append(e)
            masks.append(m)
        return Conditioning(
            embeds=torch.cat(embeds),
            pooled=torch.cat([c.pooled for c in items]) if items[0].pooled is not None else None,  # type: ignore[misc]
            mask=torch.cat(masks) if needs_mask else None,
        )

    def repeat_interleave(self, repeats: int) -> Conditioning:
        """Each row ``repeats`` times in a row: (N, ...) -> (N * repeats, ...)."""
        return Conditioning(
            embeds=self.embeds.repeat_interleave(repeats, dim=0),
            pooled=None if self.pooled is None else self.pooled.repeat_interleave(repeats, dim=0),
            mask=None if self.mask is None else self.mask.repeat_interleave(repeats, dim=0),
        )

    def repeat(self, times: int) -> Conditioning:
        """The whole batch ``times`` times: (N, ...) -> (times * N, ...)."""
        return Conditioning.cat([self] * times)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> Conditioning:
        """Move; ``dtype`` applies to the float tensors only."""
        return Conditioning(
            embeds=self.embeds.to(device=device, dtype=dtype),
            pooled=None if self.pooled is None else self.pooled.to(device=device, dtype=dtype),
            mask=None if self.mask is None else self.mask.to(device=device),
        )

    def detach(self) -> Conditioning:
        return Conditioning(
            embeds=self.embeds.detach(),
            pooled=None if self.pooled is None else self.pooled.detach(),
            mask=self.mask,
        )

    def trimmed(self) -> Conditioning:
        """Drop trailing columns that are padding in every row."""
        if self.mask is None or self.mask.shape[1] == 0:
            return self
        used = self.mask.any(dim=0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 0
        if length == self.mask.shape[1]:
            return self
        return Conditioning(self.embeds[:, :length], self.pooled, self.mask[:, :length])

    def rows(self) -> list[torch.Tensor]:
        """Per-row (L_i, D) embeddings without padding (Z-Image's list input)."""
        if self.mask is None:
            return list(self.embeds.unbind(0))
        return [e[m] for e, m in zip(self.embeds, self.mask, strict=True)]


# ---------------------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SamplingSpec:
    """How ``generate`` samples (defaults come from the preset)."""

    steps: int
    guidance: float = 1.0
    shift: float = 3.0
    solver: str = "euler"
    spacing: str = "flowmatch"
    height: int = 512
    width: int = 512
    cfg_renorm: float | None = None

    def replace(self, **changes: Any) -> SamplingSpec:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# ----------------------------------------------------------------------------------------- adapter
class FlowAdapter:
    """A flow-matching text-to-image model behind one interface (see the module docstring).

    Subclasses set ``family`` and ``DEFAULT_LORA_TARGETS`` and implement :meth:`_encode`,
    :meth:`_forward` and :meth:`text_encoder_modules`.

    Args:
        transformer: the diffusers transformer (frozen here; LoRA roles are added on top).
        vae: the diffusers ``AutoencoderKL``.
        preset: the preset this adapter was loaded from (identity for ``config_dict``), or None.
        sampling: generation defaults (else taken from ``preset``).
        device, dtype: where and in which dtype the transformer runs.
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
            sampling = SamplingSpec(
                steps=preset.steps,
                guidance=preset.guidance,
                shift=preset.shift,
                solver=preset.solver,
                spacing=preset.spacing,
                height=preset.height,
                width=preset.width,
                cfg_renorm=preset.cfg_renorm,
            )
        self.sampling = sampling
        self.transformer = transformer
        self.vae = vae
        self.scheduler_config = dict(scheduler_config or {})
        self.offload = offload_text_encoders
        self._cache: dict[str, Conditioning] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self._active_role: str | None = None
        self._role_cfg: dict[str, dict[str, Any]] = {}
        self._role_params: dict[str, list[nn.Parameter]] = {}
        self._trainable: dict[str, bool] = {}
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
    def config_dict(self, role: Any = _DEFAULT) -> dict[str, Any]:
        """JSON-able identity for cache keys: preset, sampling, dtype and a digest of the LoRA used."""
        role = self._default_role() if role is _DEFAULT else role
        preset = self.preset
        return {
            "adapter": type(self).__name__,
            "family": self.family,
            "preset": getattr(preset, "name", None),
            "hub_id": getattr(preset, "hub_id", None),
            "dtype": str(self.dtype).replace("torch.", ""),
            "sampling": dataclasses.asdict(self.sampling),
            "role": role,
            "role_digest": self.role_digest(role) if role is not None else None,
        }

    @property
    def nfe(self) -> int:
        """Transformer passes per image with the current sampling defaults."""
        return self.schedule().passes * (2 if self.sampling.guidance != 1.0 else 1)

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
        prompts = list(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        self.cache_hits += len(prompts) - len(missing)  # duplicates within a call are hits too
        self.cache_misses += len(missing)
        if missing:
            with torch.no_grad(), self._text_encoders_on_device():
                rows = self._encode(missing)
            for prompt, row in zip(missing, rows, strict=True):
                self._cache[prompt] = row.detach().to("cpu", self.dtype)
        return Conditioning.cat([self._cache[p] for p in prompts]).to(self.device)

    def null_conditioning(self, n: int) -> Conditioning:
        """The empty-prompt conditioning (``""``, as the diffusers pipelines use for CFG), N rows."""
        return self.encode_prompts([""]).repeat(n)

    def clear_prompt_cache(self) -> None:
        self._cache.clear()

    def offload_text_encoders(self) -> None:
        """Move the text encoders to the CPU now; later cache misses move them back temporarily."""
        self.offload = True
        for module in self.text_encoder_modules():
            module.to("cpu")

    @contextlib.contextmanager
    def _text_encoders_on_device(self) -> Iterator[None]:
        modules = self.text_encoder_modules()
        if not modules:
            raise TdmError(
                f"{type(self).__name__} was built without text encoders; pass Conditioning tensors directly "
                "or load the full pipeline"
            )
        if self.offload:
            for module in modules:
                module.to(self.device)
        try:
            yield
        finally:
            if self.offload:
                for module in modules:
                    module.to("cpu")

    # -- latents -----------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 8
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

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
        with self.use_role(role):
            v = self._forward(x_t.to(self.device), sigma.to(self.device), cond.to(self.device, self.dtype))
        return v.to(x_t.dtype)

    def set_vae_channels_last(self, enabled: bool) -> None:
        """Switch the VAE between channels-last and contiguous memory format."""
        self.vae_channels_last = enabled
        if self.vae is not None:
            self.vae.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, H, W) float32 images in [0, 1] (VAE scaling/shift undone).

        ``batch_size`` decodes in chunks (bounds the VAE's activation memory at high resolution).
        """
        vae = self._require_vae()
        scale, shift = self._vae_factors()
        chunks = [latents] if not batch_size else list(latents.split(batch_size))
        fmt = torch.channels_last if self.vae_channels_last else torch.contiguous_format
        out = []
        for z in chunks:
            z = (z.to(self.device, vae.dtype) / scale + shift).contiguous(memory_format=fmt)
            x = vae.decode(z, return_dict=False)[0]
            out.append((x.float() * 0.5 + 0.5).clamp(0, 1))
        return torch.cat(out)

    def encode_images(
        self,
        images: torch.Tensor,
        *,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] -> (N, C, h, w) latents in the transformer's space.

        Uses the posterior mean unless ``sample_posterior`` (then ``generator`` seeds the draw).
        """
        vae = self._require_vae()
        scale, shift = self._vae_factors()
        x = images.to(self.device, vae.dtype) * 2 - 1
        dist = vae.encode(x).latent_dist
        z = dist.sample(generator) if sample_posterior else dist.mode()
        return ((z.float() - shift) * scale).to(torch.float32)

    def _vae_factors(self) -> tuple[float, float]:
        cfg = self._require_vae().config
        return float(cfg.scaling_factor), float(getattr(cfg, "shift_factor", None) or 0.0)

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

    # -- LoRA roles --------------------------------------------------------------------------------
    @property
    def roles(self) -> list[str]:
        """Names of the LoRA roles on the transformer."""
        return list(self._role_cfg)

    def add_role(
        self,
        name: str,
        *,
        rank: int = 32,
        alpha: float = 64.0,
        target_modules: Sequence[str] | None = None,
        init: str = "gaussian",
        dropout: float = 0.0,
        trainable: bool = True,
    ) -> None:
        """Add a LoRA role (a peft adapter named ``name``) on the frozen transformer.

        Args:
            name: role name, e.g. "generator", "fake", "surrogate".
            rank, alpha: LoRA rank r and scale alpha (the LoRA output is scaled by alpha / r).
            target_modules: module-name suffixes (default: the family's ``DEFAULT_LORA_TARGETS``).
            init: "gaussian" / "zeros" (B = 0: starts equal to the base), "kaiming", or "random" (A, B random).
            trainable: whether the role's parameters require grad.
        """
        from peft import LoraConfig

        if not name or not name.replace("_", "").replace("-", "").isalnum() or name in ("default",):
            raise ConfigError(f"invalid role name {name!r}: use letters, digits, '-' or '_' (not 'default')")
        if name in self._role_cfg:
            raise ConfigError(f"role {name!r} already exists; roles: {self.roles}")
        if init not in LORA_INITS:
            raise ConfigError(f"unknown LoRA init {init!r}; valid: {', '.join(LORA_INITS)}")
        targets = list(target_modules or self.DEFAULT_LORA_TARGETS)
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            target_modules=targets,
            init_lora_weights=LORA_INITS[init],
            lora_dropout=dropout,
        )
        try:
            with warnings.catch_warnings():  # several adapters on one model is the point of roles
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                self.transformer.add_adapter(config, adapter_name=name)
        except ValueError as exc:  # peft: "Target modules ... not found in the base model"
            raise ConfigError(f"cannot add LoRA role {name!r} with targets {targets}: {exc}") from exc
        self._role_cfg[name] = {"rank": rank, "alpha": float(alpha), "target_modules": targets, "init": init}
        self._role_params.pop(name, None)
        self._trainable[name] = trainable
        params = self.role_parameters(name)
        for p in params:
            p.data = p.data.to(torch.float32)  # trainable LoRA weights stay in fp32 (bf16 base is fine)
        self._apply_active(self._active_role, force=True)
        log.info("added LoRA role %r: rank %d, alpha %g, %d tensors", name, rank, alpha, len(params))

    def role_parameters(self, name: str) -> list[nn.Parameter]:
        """The role's LoRA tensors in ``named_parameters`` order (lora_A, lora_B per wrapped module)."""
        self._require_role(name)
        if name not in self._role_params:
            tag_a, tag_b = f".lora_A.{name}.", f".lora_B.{name}."
            self._role_params[name] = [
                p for n, p in self.transformer.named_parameters() if tag_a in n or tag_b in n
            ]
        return self._role_params[name]

    def role_state(self, name: str) -> dict[str, torch.Tensor]:
        """The role's tensors keyed like peft's saved files (adapter name removed), detached, on the CPU."""
        self._require_role(name)
        tag_a, tag_b = f".lora_A.{name}.", f".lora_B.{name}."
        out = {}
        for n, p in self.transformer.named_parameters():
            if tag_a in n or tag_b in n:
                out[n.replace(f".{name}.", ".")] = p.detach().to("cpu").contiguous()
        return out

    def get_role_state(self, name: str, *, device: Any = None) -> list[torch.Tensor]:
        """Detached copies of the role's tensors (order of :meth:`role_parameters`), e.g. for an EMA."""
        return [p.detach().to(device or p.device).clone() for p in self.role_parameters(name)]

    @torch.no_grad()
    def set_role_weights(
        self, name: str, tensors: Sequence[torch.Tensor], *, source: str = "tensors"
    ) -> None:
        """Copy ``tensors`` (order of :meth:`role_parameters`) into the role; all shapes checked first."""
        params = self.role_parameters(name)
        tensors = list(tensors)
        cfg = self._role_cfg[name]
        if len(tensors) != len(params):
            raise ShapeError(
                f"{source} has {len(tensors)} tensors but role {name!r} (rank {cfg['rank']}, alpha {cfg['alpha']:g}, "
                f"targets {cfg['target_modules']}) has {len(params)} LoRA tensors on this transformer. The LoRA "
                "layout must match the one the checkpoint was trained with exactly (same rank and target modules)."
            )
        names = self._role_param_names(name)
        for i, (t, p) in enumerate(zip(tensors, params, strict=True)):
            if tuple(t.shape) != tuple(p.shape):
                raise ShapeError(
                    f"{source}: tensor {i} has shape {tuple(t.shape)} but role {name!r} parameter {names[i]} "
                    f"has shape {tuple(p.shape)}; nothing was loaded"
                )
        for t, p in zip(tensors, params, strict=True):
            p.copy_(t.to(device=p.device, dtype=p.dtype))

    def load_tdm_ema(self, name: str, path: str | Path) -> None:
        """Load a TDM / TDM-R1 EMA checkpoint (``{"ema_parameters": [tensor, ...]}``) into role ``name``.

        The list is copied in order into :meth:`role_parameters` (the layout TDM-R1's code uses:
        parameters of a peft adapter, in ``named_parameters`` order). Count and every shape are
        checked before anything is copied: a mismatch raises :class:`ShapeError`.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as exc:
            raise ShapeError(f"cannot read TDM EMA checkpoint {path}: {exc}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("ema_parameters"), list | tuple):
            keys = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
            raise ShapeError(
                f"{path} is not a TDM EMA checkpoint: expected a dict with an 'ema_parameters' list, got {keys}"
            )
        self.set_role_weights(name, state["ema_parameters"], source=f"TDM EMA checkpoint {path}")
        log.info("loaded %d EMA tensors from %s into role %r", len(state["ema_parameters"]), path, name)

    def save_role(self, name: str, directory: str | Path) -> Path:
        """Save role ``name`` as ``adapter_model.safetensors`` + ``adapter_config.json`` (peft layout)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.role_state(name), str(directory / "adapter_model.safetensors"))
        cfg = self._role_cfg[name]
        config = {
            "peft_type": "LORA",
            "r": cfg["rank"],
            "lora_alpha": cfg["alpha"],
            "target_modules": list(cfg["target_modules"]),
            "init_lora_weights": LORA_INITS[cfg["init"]],
            "tdmbench": {"family": self.family, "role": name, "init": cfg["init"]},
        }
        (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    def load_role(self, name: str, path: str | Path) -> None:
        """Load a saved role (folder from :meth:`save_role`, or a peft / diffusers LoRA file) into ``name``.

        Creates the role from ``adapter_config.json`` if it does not exist. Keys may carry the
        prefixes ``base_model.model.`` (peft) or ``transformer.`` (diffusers). Missing, unexpected
        or mis-shaped tensors raise :class:`ShapeError` before anything is copied.
        """
        path = Path(path)
        weights_file, config = _find_lora_files(path)
        if name not in self._role_cfg:
            if config is None:
                raise ShapeError(
                    f"{path}: no adapter_config.json next to the weights; cannot create role {name!r}"
                )
            self.add_role(
                name,
                rank=int(config["r"]),
                alpha=float(config.get("lora_alpha", config["r"])),
                target_modules=list(config["target_modules"]),
                init="gaussian",
            )
        state = _read_state_dict(weights_file)
        state = {_normalise_lora_key(k, name): v for k, v in state.items()}
        expected = {n.replace(f".{name}.", "."): p for n, p in self._named_role_params(name)}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ShapeError(
                f"LoRA {weights_file} does not match role {name!r}: {len(missing)} missing tensors "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
                "Check the model family and the LoRA's target modules."
            )
        bad = [
            (k, tuple(state[k].shape), tuple(p.shape))
            for k, p in expected.items()
            if state[k].shape != p.shape
        ]
        if bad:
            raise ShapeError(
                f"LoRA {weights_file}: shape mismatch for role {name!r}: {bad[:3]} (file vs model)"
            )
        with torch.no_grad():
            for k, p in expected.items():
                p.copy_(state[k].to(device=p.device, dtype=p.dtype))

    def role_digest(self, name: str) -> str:
        """sha256 (16 hex) of the role's current tensors: identifies the weights in cache keys."""
        h = hashlib.sha256()
        for p in self.role_parameters(name):
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def set_trainable(self, name: str, trainable: bool) -> None:
        """Whether role ``name``'s parameters require grad (kept across role switches)."""
        self._require_role(name)
        self._trainable[name] = trainable
        for p in self.role_parameters(name):
            p.requires_grad_(trainable)

    @contextlib.contextmanager
    def use_role(self, name: str | None) -> Iterator[None]:
        """Context in which the transformer runs with LoRA role ``name`` (None = adapters off = base)."""
        if name is not None:
            self._require_role(name)
        previous = self._active_role
        self._apply_active(name)
        try:
            yield
        finally:
            self._apply_active(previous)

    def _apply_active(self, name: str | None, force: bool = False) -> None:
        if not self._role_cfg or (name == self._active_role and not force):
            self._active_role = name
            return
        if name is None:
            self.transformer.disable_adapters()
        else:
            self.transformer.enable_adapters()
            self.transformer.set_adapter(name)
        self._active_role = name
        # peft toggles requires_grad on (de)activation; tdmbench keeps each role's own setting
        for role, flag in self._trainable.items():
            for p in self.role_parameters(role):
                if p.requires_grad != flag:
                    p.requires_grad_(flag)

    def _require_role(self, name: str) -> None:
        if name not in self._role_cfg:
            raise ConfigError(f"unknown LoRA role {name!r}; roles on this model: {self.roles or 'none'}")

    def _named_role_params(self, name: str) -> list[tuple[str, nn.Parameter]]:
        tag_a, tag_b = f".lora_A.{name}.", f".lora_B.{name}."
        return [(n, p) for n, p in self.transformer.named_parameters() if tag_a in n or tag_b in n]

    def _role_param_names(self, name: str) -> list[str]:
        return [n for n, _ in self._named_role_params(name)]


# ----------------------------------------------------------------------------------------- helpers
def move_module(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """``module.to(device, dtype)``, skipping the dtype cast when it is already right (diffusers warns)."""
    first = next(module.parameters(), None)
    if first is not None and first.dtype == dtype:
        module.to(device=device)
    else:
        module.to(device=device, dtype=dtype)


def _find_lora_files(path: Path) -> tuple[Path, dict[str, Any] | None]:
    if path.is_dir():
        for candidate in (
            "adapter_model.safetensors",
            "pytorch_lora_weights.safetensors",
            "adapter_model.bin",
        ):
            if (path / candidate).is_file():
                weights = path / candidate
                break
        else:
            raise ShapeError(
                f"{path}: no adapter_model.safetensors (or pytorch_lora_weights.safetensors) inside"
            )
        config_path = path / "adapter_config.json"
    else:
        if not path.is_file():
            raise ShapeError(f"LoRA path {path} does not exist")
        weights, config_path = path, path.parent / "adapter_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    return weights, config


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ShapeError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _normalise_lora_key(key: str, name: str) -> str:
    for prefix in ("base_model.model.", "transformer."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for part in (f".{name}.", ".default."):
        key = key.replace(part, ".")
    return key
