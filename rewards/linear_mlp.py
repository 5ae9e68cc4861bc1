"""The LAION-aesthetic-style regression head: Linear D->1024->128->64->16->1, no nonlinearities.

Used by the LAION improved aesthetic predictor (on L2-normalised CLIP ViT-L/14 image
embeddings, D=768) and by ImageReward (on the BLIP text encoder's [CLS] feature, D=768). Both
checkpoints store it as an ``nn.Sequential`` with Dropout(0.2), Dropout(0.2), Dropout(0.1)
between the first four linears, hence the parameter names ``layers.{0,2,4,6,7}.{weight,bias}``.
Without nonlinearities the head is an affine map, but it is kept layer by layer so that the
published weights load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from tdm_r1.errors import ShapeError

HIDDEN: tuple[int, ...] = (1024, 128, 64, 16)
LINEAR_INDICES: tuple[int, ...] = (0, 2, 4, 6, 7)


class LinearMLP(nn.Module):
    """(N, in_features) -> (N, 1). Dropouts are inactive in eval mode."""

    def __init__(self, in_features: int = 768) -> None:
        super().__init__()
        dims = (in_features, *HIDDEN)
        self.layers = nn.Sequential(
            nn.Linear(dims[0], dims[1]),
            nn.Dropout(0.2),
            nn.Linear(dims[1], dims[2]),
            nn.Dropout(0.2),
            nn.Linear(dims[2], dims[3]),
            nn.Dropout(0.1),
            nn.Linear(dims[3], dims[4]),
            nn.Linear(dims[4], 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def expected_keys(prefix: str = "") -> list[str]:
    return [f"{prefix}layers.{i}.{p}" for i in LINEAR_INDICES for p in ("weight", "bias")]


def load_linear_mlp(state: Mapping[str, torch.Tensor], *, source: str, prefix: str = "") -> LinearMLP:
    """Build a :class:`LinearMLP` from ``state`` (keys ``{prefix}layers.N.weight``...), strictly.

    The input width is read from ``layers.0.weight``. Raises :class:`ShapeError` naming the
    missing / unexpected keys or the mismatching shapes, with ``source`` (a file name) in the message.
    """
    keys = expected_keys(prefix)
    present = {k for k in state if k.startswith(prefix)} if prefix else set(state)
    missing = [k for k in keys if k not in state]
    unexpected = sorted(present - set(keys))
    if missing or unexpected:
        raise ShapeError(
            f"{source} is not a LAION-style MLP head state dict: missing keys {missing}, unexpected keys "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}; expected exactly {keys}"
        )
    first = state[f"{prefix}layers.0.weight"]
    if first.ndim != 2:
        raise ShapeError(f"{source}: layers.0.weight must be 2-D, got shape {tuple(first.shape)}")
    mlp = LinearMLP(int(first.shape[1]))
    sub = {k[len(prefix) :]: v for k, v in state.items() if k in set(keys)}
    try:
        mlp.load_state_dict(sub, strict=True)
    except RuntimeError as exc:
        raise ShapeError(
            f"{source}: MLP head shapes do not match D->{'->'.join(map(str, HIDDEN))}->1: {exc}"
        ) from exc
    return mlp.eval()
