"""Prompt conditioning cached by prompt text, with the text encoders offloaded between cache misses.

Text encoders are the largest components of SD3.5 and Z-Image, and a training run or a benchmark
encodes the same few hundred prompts again and again: each prompt is encoded once, kept on the
CPU in the model dtype, and the encoders (when offloaded) visit the model's device only to encode
prompts that are not cached yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from tdm_r1.errors import TdmError
from tdm_r1.models.conditioning import Conditioning


class PromptCache:
    """Conditioning rows by prompt text.

    Args:
        encode: prompts -> one :class:`Conditioning` row per prompt (run under ``no_grad``).
        modules: the text encoders (moved on and off the device when ``offload``).
        owner: the model's name, for error messages.
        offload: keep the text encoders on the CPU between cache misses.
    """

    def __init__(
        self,
        encode: Callable[[list[str]], list[Conditioning]],
        modules: Callable[[], list[nn.Module]],
        *,
        owner: str,
        offload: bool = False,
    ) -> None:
        self._encode = encode
        self._modules = modules
        self.owner = owner
        self.offload = offload
        self._rows: dict[str, Conditioning] = {}
        self.hits = 0
        self.misses = 0

    def encode(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> Conditioning:
        """Conditioning for ``prompts`` on ``device``; rows are stored on the CPU in ``dtype``."""
        prompts = list(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        self.hits += len(prompts) - len(missing)  # duplicates within a call are hits too
        self.misses += len(missing)
        if missing:
            with torch.no_grad(), self._encoders_on(device):
                rows = self._encode(missing)
            for prompt, row in zip(missing, rows, strict=True):
                self._rows[prompt] = row.detach().to("cpu", dtype)
        return Conditioning.cat([self._rows[p] for p in prompts]).to(device)

    def clear(self) -> None:
        self._rows.clear()

    def offload_now(self) -> None:
        """Move the text encoders to the CPU now; later cache misses move them back temporarily."""
        self.offload = True
        for module in self._modules():
            module.to("cpu")

    @contextlib.contextmanager
    def _encoders_on(self, device: torch.device) -> Iterator[None]:
        modules = self._modules()
        if not modules:
            raise TdmError(
                f"{self.owner} was built without text encoders; pass Conditioning tensors directly "
                "or load the full pipeline"
            )
        if self.offload:
            for module in modules:
                module.to(device)
        try:
            yield
        finally:
            if self.offload:
                for module in modules:
                    module.to("cpu")
