"""One text length per model family, recorded, and checked between recipe and presets (issue "five traps", 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdm_r1.errors import ConfigError
from tdm_r1.models.families import prompt_tokens
from tdm_r1.registry import MODELS

#: tokens per prompt of every shipped real-size model (SD3: padded to this; Z-Image: at most this)
REAL_SIZE = {
    "sd3.5-medium": 205,
    "tdm-sd3.5-medium-4step": 205,
    "z-image": 512,
    "z-image-turbo": 512,
    "z-image-4step": 512,
}


def test_every_shipped_real_size_model_states_its_tokens_per_prompt() -> None:
    for name, total in REAL_SIZE.items():
        preset = MODELS.get(name)
        assert prompt_tokens(preset.family, preset.options)["total"] == total, name
    # a pipeline folder has no preset options: it gets the family's length, the presets' one
    assert prompt_tokens("sd3", {}) == prompt_tokens("sd3", MODELS.get("sd3.5-medium").options)


def test_a_pipeline_folder_loaded_directly_conditions_on_the_family_length(tiny_folder: Path) -> None:
    from tdm_r1.models.preset import resolve_model

    adapter = resolve_model(tiny_folder).load(device="cpu")  # no preset options, no T5 (zeros)
    cond = adapter.encode_prompts(["a red cube"])
    assert cond.embeds.shape[1] == 77 + 128  # diffusers' pipeline default would give 77 + 256
    assert adapter.config_dict()["text_tokens"] == prompt_tokens("sd3", {})


def test_recipe_and_preset_lengths_must_agree_before_anything_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from tdm_r1.models.preset import ModelPreset, register_preset
    from tdm_r1.train.config import load_train_config
    from tdm_r1.train.model_check import check_model_recipe
    from tdm_r1.train.preflight import dry_run

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the recipe was checked")

    monkeypatch.setattr(ModelPreset, "load", no_loading)
    cfg = load_train_config("sd3.5m-geneval")
    assert cfg.model.max_sequence_length == 128
    check_model_recipe(cfg, MODELS.get(cfg.model.name))  # the shipped recipes agree with their presets
    bad = load_train_config("sd3.5m-geneval", overrides=["model.max_sequence_length=256"])
    with pytest.raises(
        ConfigError, match=r"max_sequence_length=256 but model 'tdm-sd3.5-medium-4step'.*128 \(205"
    ):
        dry_run(bad, 8)
    long_teacher = MODELS.get("sd3.5-medium").with_overrides(
        name="sd3.5-medium-t5-256", options={"max_sequence_length": 256}
    )
    register_preset(long_teacher)
    try:
        other = load_train_config("sd3.5m-geneval", overrides=["model.teacher=sd3.5-medium-t5-256"])
        with pytest.raises(
            ConfigError, match="teacher 'sd3.5-medium-t5-256' encodes prompts with max_sequence_length=256"
        ):
            dry_run(other, 8)
    finally:
        MODELS.remove("sd3.5-medium-t5-256")


def test_trainer_refuses_the_mismatch_before_the_reward_or_model(
    registered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tdm_r1.rewards.base as reward_base
    from tdm_r1.testing import trainkit
    from tdm_r1.train.trainer import Trainer

    monkeypatch.setattr(reward_base, "build_reward", lambda *a, **k: pytest.fail("the reward was loaded"))
    cfg = trainkit.small_config(tmp_path, model={"max_sequence_length": 128})  # tiny-trainer: 128 by family
    cfg.model.max_sequence_length = 64
    with pytest.raises(ConfigError, match="written for max_sequence_length=64"):
        Trainer(cfg).setup()
