"""What a training recipe says about its model, checked against the presets before anything loads.

* Text length: a recipe's hyper-parameters were tuned with one prompt length (TDM-R1 on SD3.5:
  77 CLIP + 128 T5 tokens), and the teacher the roles are compared with runs on the generator's
  own transformer, so it conditions on the generator's prompt embeddings. A model preset that
  encodes with another length than the recipe states (``model.max_sequence_length``), or a
  teacher preset that says another length than the model, would train on other images with other
  memory and speed and say nothing: refused here with both numbers.
* ``model.lora_scale``: only meaningful on a model that has a LoRA to scale.
"""

from __future__ import annotations

from typing import Any

from tdm_r1.errors import ConfigError
from tdm_r1.models.families import prompt_tokens


def text_length(preset: Any) -> int:
    """The ``max_sequence_length`` a preset encodes prompts with (its option, else its family's)."""
    return int(prompt_tokens(preset.family, dict(preset.options))["max_sequence_length"])


def check_model_recipe(cfg: Any, preset: Any) -> None:
    """Refuse a recipe whose text length or LoRA scale does not fit its presets (a one-line message)."""
    from tdm_r1.models.preset import resolve_model

    mine = text_length(preset)
    want = cfg.model.max_sequence_length
    if want is not None and int(want) != mine:
        tokens = prompt_tokens(preset.family, {"max_sequence_length": mine})
        raise ConfigError(
            f"recipe {cfg.name!r} is written for max_sequence_length={want} but model {preset.name!r} encodes "
            f"prompts with {mine} ({tokens['total']} tokens per prompt): use a preset with "
            f"options.max_sequence_length={want}, or set model.max_sequence_length={mine} if the recipe "
            "really is meant for that length"
        )
    if cfg.model.teacher is not None:
        teacher = resolve_model(cfg.model.teacher)
        theirs = text_length(teacher)
        if theirs != mine:
            raise ConfigError(
                f"teacher {teacher.name!r} encodes prompts with max_sequence_length={theirs} but model "
                f"{preset.name!r} with {mine}: the teacher runs on the model's transformer and prompt "
                "embeddings, so both presets must state the same length"
            )
    if cfg.model.lora_scale is not None and preset.lora is None:
        raise ConfigError(
            f"model.lora_scale={cfg.model.lora_scale} but model {preset.name!r} has no LoRA to scale "
            "(its generator starts from the base)"
        )
