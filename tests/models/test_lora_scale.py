"""A LoRA applied at a stated scale, as diffusers applies it (issue "five traps", 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tdm_r1.errors import ConfigError
from tdm_r1.models.sd3 import SD3Adapter
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.registry import MODELS
from tdm_r1.testing.tiny import tiny_sd3_pipeline

SPEC = SamplingSpec(steps=2, height=32, width=32)


def _adapter(scale_b: float = 1.0) -> SD3Adapter:
    """Tiny SD3 with a generator role of fixed random weights (lora_B multiplied by ``scale_b``)."""
    ad = SD3Adapter.from_pipeline(tiny_sd3_pipeline(seed=0), sampling=SPEC, device="cpu")
    ad.roles.add("generator", rank=4, alpha=8.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in zip(ad.roles.tensor_names("generator"), ad.roles.parameters("generator"), strict=True):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 * (scale_b if ".lora_B." in name else 1.0))
    return ad


def _velocity(ad: SD3Adapter) -> torch.Tensor:
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    return ad.velocity(x, torch.tensor([0.8, 0.3]), ad.encode_prompts(["a cat", "a dog"]), role="generator")


def test_scale_s_on_w_equals_scale_1_on_s_w_and_diffusers_set_adapters() -> None:
    s = 0.125  # the scale the TDM README states for one of its LoRAs
    scaled = _adapter()
    plain = _velocity(scaled)
    scaled.roles.set_scale("generator", s)
    v = _velocity(scaled)
    assert (v - plain).abs().max() > 1e-3  # the scale does something
    assert torch.allclose(v, _velocity(_adapter(scale_b=s)), atol=1e-6)  # == weights s W at scale 1
    scaled.transformer.set_adapters(["generator"], weights=[s])  # diffusers' own way
    assert torch.allclose(_velocity(scaled), v, atol=0)
    digest = scaled.roles.digest("generator")
    scaled.roles.fold_scale("generator")  # the same model with the scale inside the weights
    assert scaled.roles.scale("generator") == 1.0 and torch.allclose(_velocity(scaled), v, atol=1e-6)
    assert scaled.roles.digest("generator") != digest


def test_lora_scale_is_a_preset_field_in_the_identity_only_when_set() -> None:
    base = MODELS.get("tdm-sd3.5-medium-4step")
    for name in MODELS.names():  # the shipped presets' identities and files do not change
        preset = MODELS.get(name)
        assert "lora_scale" not in preset.config_dict() and "lora_scale" not in preset.to_dict(), name
    scaled = base.with_overrides(lora_scale=0.125)
    assert scaled.config_dict()["lora_scale"] == 0.125 and scaled.config_dict() != base.config_dict()
    from tdm_r1.models.preset import ModelPreset

    assert ModelPreset.from_dict(scaled.to_dict()) == scaled
    with pytest.raises(ConfigError, match="lora_scale=0.5 needs a LoRA"):
        MODELS.get("sd3.5-medium").with_overrides(lora_scale=0.5)


def test_preset_load_applies_it(tmp_path: Path) -> None:
    ad = _adapter()
    ad.roles.save("generator", tmp_path / "lora")
    preset = MODELS.get("toy-4step").with_overrides(
        name="tiny-scaled",
        hub_id=str(_save(tmp_path)),
        lora=str(tmp_path / "lora"),
        sampling=SPEC,
        options={},
        lora_scale=0.25,
    )
    loaded = preset.load(device="cpu")
    assert loaded.roles.scale("generator") == 0.25
    ad.roles.set_scale("generator", 0.25)
    assert torch.allclose(_velocity(loaded), _velocity(ad), atol=1e-6)


def _save(tmp_path: Path) -> Path:
    folder = tmp_path / "pipe"
    tiny_sd3_pipeline(seed=0).save_pretrained(folder)
    return folder


def test_train_set_model_lora_scale_starts_from_the_scaled_lora(registered: Path, tmp_path: Path) -> None:
    from tdm_r1.models.preset import register_preset
    from tdm_r1.testing import trainkit
    from tdm_r1.train.trainer import Trainer

    ad = SD3Adapter.from_pipeline(tiny_sd3_pipeline(seed=0), sampling=SPEC, device="cpu")
    ad.roles.add("generator", rank=4, alpha=4.0)
    with torch.no_grad():
        for p in ad.roles.parameters("generator"):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.3)
    ad.roles.save("generator", tmp_path / "lora")
    register_preset(
        MODELS.get("tiny-trainer").with_overrides(
            name="tiny-lora", lora=str(tmp_path / "lora"), lora_format="peft"
        )
    )
    try:
        with pytest.raises(ConfigError, match="no LoRA to scale"):
            Trainer(trainkit.small_config(tmp_path / "a", model={"lora_scale": 0.5})).setup()
        t = Trainer(trainkit.small_config(tmp_path / "b", model={"name": "tiny-lora", "lora_scale": 0.5}))
        t.setup()
        assert t.adapter.roles.scale("generator") == 1.0  # folded: copies, EMA and export need no scale
        ad.roles.set_scale("generator", 0.5)
        x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        cond = t.adapter.encode_prompts(["a cat"])
        assert torch.allclose(
            t.adapter.velocity(x, 0.5, cond, role="generator"),
            ad.velocity(x, 0.5, cond, role="generator"),
            atol=1e-5,
        )
    finally:
        MODELS.remove("tiny-lora")
