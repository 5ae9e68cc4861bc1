"""Presets: registry rows, NFE, offline failures, run presets, real-size LoRA layouts, tokenizers."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.errors import ConfigError, MissingWeightsError
from tdm_r1.models.preset import (
    SD3_LORA_TARGETS,
    ModelPreset,
    load_preset_file,
    register_lora_preset,
    register_preset,
    resolve_model,
    save_preset_file,
)
from tdm_r1.models.presets import TDM_SD35_LORA
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.registry import MODELS
from tdm_r1.testing.lora_roles import add_random_role
from tdm_r1.testing.tiny import tiny_sd3_pipeline
from tdm_r1.toyworld.clip_tokenizer import clip_tokenizer
from tdm_r1.weights import WeightFile

runner = CliRunner()


def test_registered_presets_and_their_cost() -> None:
    expected = {
        "sd3.5-medium": (80, 40, 4.5, 512),
        "tdm-sd3.5-medium-4step": (4, 4, 1.0, 512),
        "z-image": (100, 50, 5.0, 1024),
        "z-image-turbo": (8, 9, 1.0, 1024),
        "z-image-4step": (4, 5, 1.0, 1024),
    }
    for name, (nfe, steps, guidance, res) in expected.items():
        p = MODELS.get(name)
        assert (p.nfe, p.sampling.steps, p.sampling.guidance, p.sampling.height) == (
            nfe,
            steps,
            guidance,
            res,
        ), name
    tdm = MODELS.get("tdm-sd3.5-medium-4step")
    assert tdm.sampling.solver == "dpmsolver++" and tdm.sampling.shift == 3.0 and tdm.lora_format == "tdm-ema"
    assert (tdm.lora_rank, tdm.lora_alpha, tdm.lora_targets) == (32, 64.0, SD3_LORA_TARGETS)


def test_ls_models_and_weights_list() -> None:
    result = runner.invoke(app, ["ls", "models"])
    assert result.exit_code == 0, result.output
    for word in ("z-image-4step", "nfe", "resolution", "1024x1024", "dpmsolver++ (shift 3)", "TDM-R1 README"):
        assert word in result.output
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0 and "Luo-Yihong/TDM-R1" in result.output and "--model-path" in result.output


def test_offline_hub_id_fails_fast_naming_id_and_local_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    preset = ModelPreset(
        name="ghost", family="sd3", hub_id="no-such-org/no-such-model", sampling=SamplingSpec(steps=4)
    )
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as info:
        preset.load(device="cpu")
    assert time.perf_counter() - start < 5
    msg = str(info.value)
    assert "no-such-org/no-such-model" in msg and "--model-path" in msg and "TDMBENCH_MODEL_GHOST" in msg
    prompts = tmp_path / "x.txt"  # inputs are checked before the model loads: give real ones
    prompts.write_text("a cat\n")
    start = time.perf_counter()
    result = runner.invoke(
        app,
        ["generate", "--model", "sd3.5-medium", "--prompts", str(prompts), "--out", str(tmp_path / "out")],
    )
    assert time.perf_counter() - start < 5
    assert result.exit_code == 2 and "stabilityai/stable-diffusion-3.5-medium" in result.output
    assert "TDMBENCH_SD35_MEDIUM_PATH" in result.output


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-sd3")
    tiny_sd3_pipeline(seed=9).save_pretrained(folder)
    return folder


def test_offline_lora_fails_fast(tiny_folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    preset = ModelPreset(
        name="tiny-with-lora",
        family="sd3",
        hub_id=str(tiny_folder),
        sampling=SamplingSpec(steps=2),
        lora=TDM_SD35_LORA,
        lora_format="tdm-ema",
    )
    start = time.perf_counter()
    with pytest.raises(
        MissingWeightsError, match=r"Luo-Yihong/TDM_sd3-5_lora/tdm_sd3-5_lora.ckpt.*--lora-path"
    ):
        preset.load(device="cpu")
    assert time.perf_counter() - start < 5


def test_local_folder_preset_run_preset_and_json_round_trip(tiny_folder: Path, tmp_path: Path) -> None:
    base = register_preset(
        ModelPreset(
            name="tiny-test-base",
            family="sd3",
            hub_id=str(tiny_folder),
            sampling=SamplingSpec(steps=3, height=32, width=32),
            kind="toy",
        )
    )
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['max_seq_len'\].*max_sequence_length"):
        base.load(device="cpu", max_seq_len=3)
    adapter = base.load(device="cpu", offload_text_encoders=True)
    assert adapter.offload and adapter.encode_prompts(["a"]).embeds.shape[0] == 1
    assert len(adapter.tokenizer) == len(adapter.tokenizer_2) == 49408  # the saved CLIP tokenizer loads back
    assert all(p.device.type == "cpu" for m in adapter.text_encoder_modules() for p in m.parameters())
    assert adapter.dtype == torch.float32 and list(adapter.roles) == [] and adapter.nfe == 3
    add_random_role(adapter, "generator", rank=4, alpha=8)
    run = tmp_path / "run"
    adapter.save_role("generator", run / "lora")
    preset = register_lora_preset("tiny-test-rl", "tiny-test-base", run / "lora", steps=2)
    assert MODELS.get("tiny-test-rl") is preset and preset.kind == "rl" and preset.lora_format == "peft"
    save_preset_file(preset, run / "preset.json")
    assert json.loads((run / "preset.json").read_text())["lora"] == "./lora"
    moved = tmp_path / "moved"
    (run).rename(moved)  # a run folder stays usable after being moved
    again = resolve_model(moved)
    assert again.lora == str((moved / "lora").resolve())
    loaded = again.load(device="cpu")
    assert list(loaded.roles) == ["generator"]
    assert loaded.roles.digest("generator") == adapter.roles.digest("generator")
    images = loaded.generate(["a"], [0], progress=False)
    assert images.shape == (1, 3, 32, 32)
    assert loaded.config_dict()["role_digest"] == adapter.roles.digest("generator")
    # a pipeline folder is a model too
    assert resolve_model(tiny_folder).family == "sd3"
    # WeightFile-valued fields survive JSON
    p = dataclasses.replace(MODELS.get("z-image-4step"))
    assert ModelPreset.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    path = save_preset_file(p, tmp_path / "p.json")
    assert load_preset_file(path) == p


def test_preset_validation_teaches() -> None:
    with pytest.raises(ConfigError, match="unknown family 'flux'"):
        ModelPreset(name="x", family="flux", hub_id="a/b", sampling=SamplingSpec(steps=4))
    with pytest.raises(ConfigError, match="lora_format"):
        ModelPreset(name="x", family="sd3", hub_id="a/b", sampling=SamplingSpec(steps=4), lora="l.ckpt")
    with pytest.raises(ConfigError, match="unknown preset field"):
        MODELS.get("sd3.5-medium").with_overrides(stepz=3)
    with pytest.raises(ConfigError, match="neither a run folder"):
        resolve_model(Path(__file__).parent)


def test_real_size_lora_layouts_match_tdm_checkpoints() -> None:
    """On the real configs (meta device: no memory), the TDM / TDM-R1 LoRA layouts have these tensor counts."""
    from diffusers import SD3Transformer2DModel, ZImageTransformer2DModel
    from peft import LoraConfig

    from tdm_r1.testing.real_configs import SD35_MEDIUM_TRANSFORMER, Z_IMAGE_TRANSFORMER

    with torch.device("meta"):
        sd3 = SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER)
        zim = ZImageTransformer2DModel(**Z_IMAGE_TRANSFORMER)
    assert 2.2e9 < sum(p.numel() for p in sd3.parameters()) < 2.3e9
    assert 6.1e9 < sum(p.numel() for p in zim.parameters()) < 6.2e9
    sd3.add_adapter(
        LoraConfig(r=32, lora_alpha=64, target_modules=list(SD3_LORA_TARGETS)), adapter_name="tdm"
    )
    tensors = [p for n, p in sd3.named_parameters() if ".tdm." in n]
    # 23 joint blocks x 8 projections + the last block (no to_add_out) x 7, each lora_A + lora_B
    assert len(tensors) == (23 * 8 + 7) * 2 == 382
    assert sum(p.numel() for p in tensors) == 18_776_064
    zim.add_adapter(
        LoraConfig(r=32, lora_alpha=64, target_modules=list(MODELS.get("z-image-4step").lora_targets)),
        adapter_name="tdmr1",
    )
    tensors = [p for n, p in zim.named_parameters() if ".tdmr1." in n]
    assert len(tensors) == (30 + 2 + 2) * 4 * 2 == 272


def test_offline_clip_tokenizer_is_the_real_one() -> None:
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("", padding="max_length", max_length=77).input_ids[:3] == [49406, 49407, 49407]


def test_weight_file_how_to_provide_mentions_env() -> None:
    assert isinstance(TDM_SD35_LORA, WeightFile)
    assert "TDMBENCH_TDM_SD35_LORA" in TDM_SD35_LORA.how_to_provide()


def test_identity_follows_local_weights_not_their_location(tmp_path: Path) -> None:
    """The same weights in another checkout give the same identity; other weights another one."""
    import dataclasses
    import shutil

    from tdm_r1.registry import MODELS

    base = MODELS.get("toy-4step")
    copies = []
    for name in ("a", "b"):
        folder = tmp_path / name / "toy-4step"
        shutil.copytree(base.lora, folder)
        copies.append(dataclasses.replace(base, lora=str(folder)))
    assert copies[0].config_dict() == copies[1].config_dict() == base.config_dict()
    weights = Path(copies[1].lora) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert copies[0].config_dict() != copies[1].config_dict()


# a run's final/preset.json as tdmbench wrote it before presets held a SamplingSpec (flat keys)
OLD_RUN_PRESET = {
    "name": "demo-toy-r1-ocr",
    "family": "sd3",
    "hub_id": "./teacher",
    "steps": 4,
    "guidance": 1.0,
    "shift": 1.0,
    "solver": "euler",
    "spacing": "trailing",
    "height": 64,
    "width": 64,
    "kind": "rl",
    "lora": "./lora",
    "lora_format": "peft",
    "lora_rank": 32,
    "lora_alpha": 64.0,
    "lora_targets": None,
    "dtype": "float32",
    "cfg_renorm": None,
    "options": {"max_sequence_length": 20},
    "model_file": None,
    "sources": "tdmbench train run demo-toy-r1-ocr",
    "few_step_base": "toy-4step",
    "baseline": "toy-teacher",
    "in_domain": ["ocr"],
    "benchmarks": ["toy-geneval", "toy-ocr"],
}


def test_preset_files_keep_the_flat_format_and_read_nested_sampling(tmp_path: Path) -> None:
    run = tmp_path / "final"
    run.mkdir()
    (run / "preset.json").write_text(json.dumps(OLD_RUN_PRESET))
    preset = load_preset_file(run / "preset.json")
    assert preset.sampling == SamplingSpec(steps=4, shift=1.0, spacing="trailing", height=64, width=64)
    assert preset.lora == str((run / "lora").resolve()) and preset.nfe == 4 and preset.sampling.steps == 4
    # written back: the same flat keys and values (cache identities of old runs stay valid)
    again = json.loads(save_preset_file(preset, run / "again.json").read_text())
    assert again == OLD_RUN_PRESET
    nested = {k: v for k, v in OLD_RUN_PRESET.items() if k not in ("steps", "spacing", "height", "width")}
    nested["sampling"] = {"steps": 4, "spacing": "trailing", "height": 64, "width": 64}
    assert ModelPreset.from_dict(nested, base_dir=run) == preset
    with pytest.raises(ConfigError, match=r"unknown preset key\(s\) \['stepz'\]"):
        ModelPreset.from_dict({**OLD_RUN_PRESET, "stepz": 3})
    with pytest.raises(ConfigError, match="bad sampling fields"):
        ModelPreset.from_dict({k: v for k, v in OLD_RUN_PRESET.items() if k != "steps"})


def test_overrides_of_sampling_fields_change_the_one_sampling_spec() -> None:
    base = MODELS.get("z-image-4step")
    fast = base.with_overrides(steps=3, guidance=2.0, kind="toy")
    assert fast.sampling == base.sampling.replace(steps=3, guidance=2.0) and fast.kind == "toy"
    assert (fast.nfe, base.nfe) == (2 * 2, 4)  # zero-terminal: 3 steps are 2 passes, CFG doubles
    assert base.with_overrides(sampling=SamplingSpec(steps=2), width=64).sampling == SamplingSpec(
        steps=2, width=64
    )
    with pytest.raises(ConfigError, match="unknown solver 'heun'"):
        base.with_overrides(solver="heun")
    with pytest.raises(ConfigError, match="multiples of 16"):
        ModelPreset(name="x", family="sd3", hub_id="a/b", sampling=SamplingSpec(steps=4, height=40))
