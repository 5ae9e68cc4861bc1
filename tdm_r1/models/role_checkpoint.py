"""Gradient checkpointing that recomputes a block with the LoRA role it first ran with.

diffusers' default checkpointing (``ModelMixin.enable_gradient_checkpointing``) recomputes a
block's forward during backward with whatever adapter is active *then*. A backward run after the
role was switched (another role, or none: the frozen base) recomputes another function: torch
raises ``CheckpointError`` when the number of saved tensors differs (79 vs 51 on SD3 with the
LoRA on and off) or, worse, silently computes the gradients of another role's forward when it
does not (two roles of the same layout).

:func:`role_checkpoint` is the ``gradient_checkpointing_func`` that fixes it: at forward time it
records each peft layer's active adapter and on/off switch inside the block, and the checkpointed
function sets exactly that state around the block call, so the recomputation sees the role of
the forward whatever is active at backward time. The attributes are set directly (peft's
``BaseTunerLayer._active_adapter`` / ``_disable_adapters``, what ``set_adapter`` /
``enable_adapters`` assign) so that the roles' ``requires_grad`` flags are left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

#: (layer, active adapter(s), adapters disabled) of one peft layer
_LayerState = tuple[nn.Module, Any, bool]


def _tuner_layers(block: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in block.modules() if isinstance(m, BaseTunerLayer)]


def _snapshot(layers: list[nn.Module]) -> list[_LayerState]:
    out = []
    for layer in layers:
        active = layer._active_adapter
        out.append(
            (layer, list(active) if isinstance(active, list) else active, bool(layer._disable_adapters))
        )
    return out


@contextlib.contextmanager
def _restored(state: list[_LayerState]) -> Iterator[None]:
    """Put each layer in its recorded state for the body; the state found is restored after."""
    current = _snapshot([layer for layer, _, _ in state])
    for layer, active, disabled in state:
        layer._active_adapter = active
        layer._disable_adapters = disabled
    try:
        yield
    finally:
        for layer, active, disabled in current:
            layer._active_adapter = active
            layer._disable_adapters = disabled


def role_checkpoint(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``torch.utils.checkpoint`` (non-reentrant) of ``block(*args, **kwargs)`` with its LoRA state pinned."""
    state = _snapshot(_tuner_layers(block))

    def run(*a: Any, **kw: Any) -> Any:
        with _restored(state):
            return block(*a, **kw)

    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, **kwargs)


def enable(transformer: nn.Module) -> None:
    """Gradient checkpointing of a diffusers transformer's blocks with :func:`role_checkpoint`."""
    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=role_checkpoint)
