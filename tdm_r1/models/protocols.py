"""What the rest of tdmbench needs of a model, as typing Protocols (for type checkers; no torch at run time).

:class:`~tdm_r1.models.adapter.FlowAdapter` satisfies all three; a new model family only has to
satisfy the ones its callers use:

* :class:`VelocityModel`: the sampler (``tdm_r1.models.sampling.sample``) calls ``velocity`` only;
  classifier-free guidance is computed over two velocities by the flow math, not by the model.
* :class:`ImageGenerator`: the eval runner and ``tdmbench generate``.
* :class:`TrainableFlowModel`: the trainer (rollouts, losses, LoRA roles, export).

They are ``runtime_checkable``: ``isinstance(model, TrainableFlowModel)`` checks that every member
exists (not the signatures; ``tests/models/test_sd3.py`` checks those of ``FlowAdapter``).

Tensor conventions: latents (N, C, h, w); ``sigma`` (N,) or a scalar in [0, 1] with
``x_sigma = (1 - sigma) x0 + sigma noise``; velocities ``v = noise - x0``; images float32
(N, 3, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tdm_r1.models.conditioning import Conditioning
    from tdm_r1.models.roles import LoraRoles
    from tdm_r1.models.spec import SamplingSpec
    from tdm_r1.schedule import FlowSchedule


@runtime_checkable
class VelocityModel(Protocol):
    """A flow model the sampler can integrate."""

    def velocity(
        self, x_t: torch.Tensor, sigma: torch.Tensor | float, cond: Conditioning, role: str | None = None
    ) -> torch.Tensor:
        """(N, C, h, w) velocity ``noise - x0`` at ``x_t``; ``role`` selects a LoRA (None = base)."""
        ...


@runtime_checkable
class ImageGenerator(Protocol):
    """A model the eval runner and ``tdmbench generate`` can sample images from."""

    sampling: SamplingSpec

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
        progress: bool = True,
    ) -> torch.Tensor:
        """(N, 3, H, W) float32 images in [0, 1] on the CPU, deterministic per (prompt, seed)."""
        ...

    def config_dict(self) -> dict[str, Any]:
        """JSON-able identity of the model and its sampling (image cache keys)."""
        ...

    def schedule(
        self, steps: int | None = None, *, height: int | None = None, width: int | None = None
    ) -> FlowSchedule:
        """The sampling schedule at these settings (its ``passes`` give the NFE)."""
        ...


@runtime_checkable
class TrainableFlowModel(VelocityModel, Protocol):
    """A model the trainer can roll out, differentiate through its LoRA roles and export."""

    sampling: SamplingSpec
    device: torch.device
    dtype: torch.dtype
    transformer: nn.Module
    roles: LoraRoles

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Conditioning for the prompts on ``device`` (cached by text)."""
        ...

    def null_conditioning(self, n: int) -> Conditioning:
        """The empty-prompt conditioning, ``n`` rows (the CFG branch)."""
        ...

    def initial_noise(self, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
        """(N, C, h, w) float32 noise on the CPU, one generator per seed."""
        ...

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the latent of a ``height`` x ``width`` image."""
        ...

    def decode(self, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, H, W) float32 images in [0, 1]."""
        ...

    def schedule(
        self, steps: int | None = None, *, height: int | None = None, width: int | None = None
    ) -> FlowSchedule:
        """The sampling schedule at these settings."""
        ...

    def add_role(self, name: str, **kwargs: Any) -> None: ...

    def role_parameters(self, name: str) -> list[nn.Parameter]: ...

    def get_role_state(self, name: str, *, device: Any = None) -> list[torch.Tensor]: ...

    def set_role_weights(
        self, name: str, tensors: Sequence[torch.Tensor], *, source: str = "tensors"
    ) -> None: ...

    def set_trainable(self, name: str, trainable: bool) -> None: ...

    def save_role(self, name: str, directory: str | Path) -> Path: ...

    def use_role(self, name: str | None) -> AbstractContextManager[None]: ...
