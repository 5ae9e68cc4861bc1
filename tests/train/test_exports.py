"""Budget checkpoints: ``export_epochs`` exports the EMA generator mid-run as an evaluable model folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdm_r1.errors import ConfigError
from tdm_r1.train.config import load_train_config


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={tmp_path / 'run'}",
        "rollout.prompts_per_epoch=2",
        "rollout.group_size=2",
        "rollout.batch_size=4",
        "method.micro_batch=4",
        "max_epochs=2",
        "checkpoint_every=0",
        "eval_benchmarks=[]",
        "trackers=[]",
        "register_as=null",
        *extra,
    ]


def test_an_export_epoch_leaves_a_model_folder_of_that_epochs_ema_generator(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tdm_r1.models.preset import load_preset_file
    from tdm_r1.train.trainer import Trainer

    cfg = load_train_config("toy-ocr", overrides=_overrides(tmp_path, "export_epochs=[1]"))
    run = Trainer(cfg).fit()
    mid, final = run / "exports" / "epoch-1", run / "final"
    assert sorted(p.name for p in (run / "exports").iterdir()) == ["epoch-1"]
    a, b = load_preset_file(mid / "preset.json"), load_preset_file(final / "preset.json")
    assert a.sampling == b.sampling and a.name == b.name
    w1 = load_file(next((mid / "lora").rglob("*.safetensors")))
    w2 = load_file(next((final / "lora").rglob("*.safetensors")))
    assert w1.keys() == w2.keys()
    assert any(not (w1[k] == w2[k]).all() for k in w1)  # epoch 2's update moved the EMA generator


def test_an_export_epoch_outside_the_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"export_epochs must lie in 1..max_epochs=2, got \[3\]"):
        load_train_config("toy-ocr", overrides=_overrides(tmp_path, "export_epochs=[3]"))
