"""``tdmbench export``: a trained role written for diffusers' ``load_lora_weights`` and for peft,
loaded by those libraries' own loaders and by tdmbench, giving the same transformer outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.errors import ConfigError, ShapeError
from tdm_r1.models.lora_export import export_lora
from tdm_r1.models.sd3 import SD3Adapter
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.testing.lora_roles import add_random_role
from tdm_r1.testing.tiny import tiny_sd3_pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, SD3Adapter]:
    """A random generator role (rank 4, alpha 8: a LoRA scale of 2) saved as a run saves it."""
    ad = SD3Adapter.from_pipeline(
        tiny_sd3_pipeline(seed=0), sampling=SamplingSpec(steps=2, height=32, width=32), device="cpu"
    )
    add_random_role(ad, "generator", rank=4, alpha=8)
    run = tmp_path_factory.mktemp("run")
    ad.save_role("generator", run / "final" / "lora")
    return run, ad


def _forward(transformer, role_ctx=None) -> torch.Tensor:
    """(1, C, 8, 8) transformer output on a fixed random input."""
    gen = torch.Generator().manual_seed(0)
    cfg = transformer.config
    x = torch.randn(1, cfg.in_channels, 8, 8, generator=gen)
    enc = torch.randn(1, 7, cfg.joint_attention_dim, generator=gen)
    pooled = torch.randn(1, cfg.pooled_projection_dim, generator=gen)
    with torch.no_grad():
        return transformer(
            hidden_states=x,
            encoder_hidden_states=enc,
            pooled_projections=pooled,
            timestep=torch.tensor([500.0]),
        ).sample


def test_diffusers_file_loads_with_the_pipelines_own_loader_and_gives_the_same_outputs(
    saved, tmp_path
) -> None:
    run, ad = saved
    with ad.roles.use("generator"):
        want = _forward(ad.transformer)
    base = _forward(tiny_sd3_pipeline(seed=0).transformer)
    assert (want - base).abs().max() > 1e-2  # the LoRA changes the output
    result = CliRunner().invoke(
        app, ["export", str(run), "--format", "diffusers", "--out", str(tmp_path / "x.safetensors")]
    )
    assert result.exit_code == 0, result.output
    assert "load_lora_weights" in result.output
    pipe = tiny_sd3_pipeline(seed=0)
    pipe.load_lora_weights(str(tmp_path / "x.safetensors"))  # diffusers' real loader
    assert torch.allclose(_forward(pipe.transformer), want, atol=1e-5)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "x.safetensors"), "pt") as fh:
        keys, meta = list(fh.keys()), json.loads(fh.metadata()["lora_adapter_metadata"])
    assert all(k.startswith("transformer.") and ".lora_" in k for k in keys)
    assert meta["transformer.r"] == meta["transformer.lora_alpha"] == 4  # alpha / r folded into B
    # and tdmbench reads it back (the role is created from the file's metadata)
    other = SD3Adapter.from_pipeline(
        tiny_sd3_pipeline(seed=0), sampling=SamplingSpec(steps=2, height=32, width=32), device="cpu"
    )
    other.roles.load("generator", tmp_path / "x.safetensors")
    with other.roles.use("generator"):
        assert torch.allclose(_forward(other.transformer), want, atol=1e-5)


def test_peft_folder_loads_with_peft_model_from_pretrained(saved, tmp_path) -> None:
    from peft import PeftModel

    run, ad = saved
    with ad.roles.use("generator"):
        want = _forward(ad.transformer)
    folder = export_lora(run / "final", "peft", tmp_path / "peft")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    model = PeftModel.from_pretrained(tiny_sd3_pipeline(seed=0).transformer, str(folder))
    assert torch.allclose(_forward(model), want, atol=1e-6)


def test_bad_export_requests_are_one_line_errors(saved, tmp_path) -> None:
    run, _ = saved
    with pytest.raises(ConfigError, match="unknown LoRA format 'kohya'"):
        export_lora(run, "kohya", tmp_path / "k.safetensors")
    with pytest.raises(ConfigError, match="name it \\*.safetensors"):
        export_lora(run, "diffusers", tmp_path / "x.bin")
    with pytest.raises(ShapeError, match="no saved LoRA role"):
        export_lora(tmp_path, "diffusers", tmp_path / "x.safetensors")
