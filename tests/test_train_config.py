"""Every shipped training preset loads strictly and divides over its intended process count."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdm_r1.errors import ConfigError
from tdm_r1.train.config import PRESETS_DIR, check_world, load_train_config, resolve_config_path

PRESETS = sorted(PRESETS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_shipped_presets_load(path: Path) -> None:
    cfg = load_train_config(path)
    check_world(cfg, 8 if "8gpu" in path.stem else 1)
    if cfg.rewards:
        assert cfg.rollout.group_size >= 2
    if path.stem.startswith("sd3.5m"):
        # the public recipe: lr 3e-4 (generator lr/4), tdm_weight 0.3, two boundaries per micro-batch
        assert cfg.optim.lr == 3e-4 and cfg.optim.generator_lr_scale == 0.25
        assert cfg.method.tdm_weight == 0.3 and cfg.method.num_train_timesteps == 2
        assert cfg.model.lora_rank == 32 and cfg.model.lora_alpha == 64


def test_public_ocr_and_geneval_knobs() -> None:
    ocr = load_train_config("sd3.5m-ocr-8gpu")
    assert (ocr.method.beta_dpo, ocr.method.rl_cfg, ocr.method.t_min_dgpo, ocr.method.trunc_steps) == (
        10,
        4.5,
        300,
        4,
    )
    assert ocr.samples_per_epoch == 48 * 24 == 1152
    gen = load_train_config("sd3.5m-geneval-8gpu")
    assert (gen.method.beta_dpo, gen.method.rl_cfg, gen.method.t_min_dgpo_reward) == (1, 2.5, 550)
    ir = load_train_config("sd3.5m-imagereward-8gpu")
    assert ir.method.trunc_steps == 2 and ir.method.clip_range == 2e-3


def test_preset_names_resolve_with_did_you_mean() -> None:
    assert resolve_config_path("presets/toy-ocr.yaml").name == "toy-ocr.yaml"
    assert resolve_config_path("toy-ocr").name == "toy-ocr.yaml"
    with pytest.raises(ConfigError, match="Did you mean toy-ocr"):
        resolve_config_path("toy-orc")
