"""The model side of an evaluation: which model a ``--model`` names, and a handle that loads it late.

:func:`resolve_eval_model` accepts a registered name, a preset object (a
:class:`~tdm_r1.models.preset.ModelPreset`, or anything with ``name``, ``nfe`` and ``load``) or a
path (a run folder ``runs/<name>`` or ``runs/<name>/final``, a ``preset.json``, a diffusers
pipeline folder); none of them is written into the model registry. :class:`EvalModel` gives the
model's cache identity without loading weights when the preset can say it (``config_dict``), so a
fully cached evaluation never loads the model.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from tdm_r1.eval.cache import ImageCache

log = logging.getLogger(__name__)

#: Optional preset / run-metadata fields the leaderboard uses (see :func:`model_metadata`).
RELATION_FIELDS: tuple[str, ...] = ("few_step_base", "baseline", "in_domain")


def resolve_eval_model(model: str | Path | Any) -> tuple[str, Any]:
    """(results name, preset) of what ``evaluate`` was given.

    A registered name gives its canonical name (results stay under ``results/<benchmark>/<name>``);
    a path or a preset object gives the preset's own ``name``.
    """
    if not isinstance(model, str | Path):
        return str(model.name), model
    from tdm_r1.models.preset import resolve_model
    from tdm_r1.registry import MODELS

    if isinstance(model, str) and model in MODELS:
        name = MODELS.canonical(model)
        return name, MODELS.get(name)
    # a run folder, preset JSON, pipeline folder or finished run's name, as `generate` takes
    preset = resolve_model(model)
    return preset.name, preset


def model_metadata(preset: Any) -> dict[str, Any]:
    """Leaderboard relations of a preset: its few-step base, its multi-step baseline, and the
    rewards it was RL-trained on (``in_domain``). Each is an optional preset attribute; a saved
    training run sets them in its ``preset.json``."""
    out: dict[str, Any] = {}
    for name in RELATION_FIELDS:
        value = getattr(preset, name, None)
        if name == "in_domain" and value is not None:
            value = [value] if isinstance(value, str) else list(value)
        out[name] = value
    return out


class EvalModel:
    """A preset whose adapter is loaded only when an image is missing from the cache."""

    def __init__(self, name: str, preset: Any, device: Any = None) -> None:
        self.name = name
        self.preset = preset
        self.device = device
        self._adapter: Any = None
        self._config: dict[str, Any] | None = None
        self._identity: str | None = None

    @classmethod
    def of(cls, model: str | Path | Any, device: Any = None) -> EvalModel:
        """The handle of a registered name, preset object or run folder (:func:`resolve_eval_model`)."""
        return cls(*resolve_eval_model(model), device)

    @property
    def nfe(self) -> int:
        return int(self.preset.nfe)

    def sampler(self) -> dict[str, Any]:
        """The preset's sampling settings (steps, guidance, shift, solver, spacing, resolution, ...)."""
        from tdm_r1.models.identity import sampler_settings

        return sampler_settings(self.preset)

    def config(self) -> dict[str, Any]:
        """Every field of the model, for provenance (``meta.json``'s ``model.config``).

        ``preset.config_dict()`` when the preset offers it (no weights are loaded, so a fully
        cached re-run never touches the model), else the loaded adapter's ``config_dict()``.
        """
        if self._config is None:
            fn = getattr(self.preset, "config_dict", None)
            self._config = dict(fn()) if callable(fn) else dict(self.adapter().config_dict())
        return self._config

    def image_identity(self) -> dict[str, Any]:
        """What determines the images: ``preset.image_identity()`` (weights digests, LoRA layout,
        dtype, options, sampling; no names). A preset object without it (a plug-in's) is identified
        by all its fields (:meth:`config`) and its sampler."""
        fn = getattr(self.preset, "image_identity", None)
        if callable(fn):
            return dict(fn())
        return {"adapter": self.config(), "sampler": self.sampler()}

    def text_tokens(self) -> dict[str, Any] | None:
        """Text tokens per prompt the model conditions on (``models.families.prompt_tokens``), or
        None for a preset object without a family."""
        family = getattr(self.preset, "family", None)
        if family is None:
            return None
        from tdm_r1.models.families import prompt_tokens

        return prompt_tokens(family, getattr(self.preset, "options", None))

    def identity(self) -> str:
        """sha256 of :meth:`image_identity`: the model part of every image key."""
        if self._identity is None:
            self._identity = ImageCache.model_identity(self.image_identity())
        return self._identity

    def config_hash(self) -> str:
        """The ``model_config_hash`` of result files (first 16 hex of :meth:`identity`)."""
        return self.identity()[:16]

    def adapter(self) -> Any:
        if self._adapter is None:
            log.info("loading model %s on %s", self.name, self.device)
            self._adapter = self.preset.load(device=self.device)
        return self._adapter

    def release(self) -> None:
        if self._adapter is not None:
            self._adapter = None
            free_memory(self.device)


def free_memory(device: Any) -> None:
    """Return a released model's accelerator memory (a full ``gc`` pass costs ~0.2 s, so only
    where it matters: on the CPU, reference counting has already freed the weights)."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
