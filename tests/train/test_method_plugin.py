"""An RL method from a plug-in module outside the package: accepted, listed, trained and placed in
the arena with no edit to tdmbench (examples/plugins/rwr_method.py, docs/extending.md)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdm_r1.errors import ConfigError
from tdm_r1.testing import trainkit

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "examples" / "plugins"


@pytest.fixture
def rwr(monkeypatch):
    """The example plug-in, imported as ``--plugin rwr_method`` would; unregistered afterwards."""
    from tdm_r1.plugins import load_plugins
    from tdm_r1.testing.plugins import isolated_plugins

    with isolated_plugins():
        sys.path.insert(0, str(PLUGINS))
        load_plugins(["rwr_method"])
        yield sys.modules["rwr_method"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PLUGINS), HF_HUB_OFFLINE="1")
    env.pop("TDMBENCH_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "tdm_r1.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_the_plugin_method_is_accepted_by_train_listed_and_placed_in_the_arena_grid() -> None:
    out = _cli("--plugin", "rwr_method", "train", "--method", "rwr", "--reward", "ocr", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "toy-rwr-4step-ocr.yaml" in out.stdout and "method rwr" in out.stdout
    listed = _cli("--plugin", "rwr_method", "ls", "methods")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("| rwr "))
    assert "method.rwr" in row and "rwr_method" in row
    arena = _cli("--plugin", "rwr_method", "arena", "--methods", "rwr", "--seeds", "0", "--dry-run")
    assert arena.returncode == 0, arena.stderr
    assert arena.stdout.count("rwr @ toy-4step seed 0") == 2  # GenEval and OCR
    # without the plug-in the name is unknown, with the registry's did-you-mean
    bad = _cli("train", "--method", "rwr", "--reward", "ocr", "--dry-run")
    assert bad.returncode == 2 and "Unknown method 'rwr'" in bad.stderr


def test_its_options_are_a_config_section_and_builtin_configs_keep_their_identity(rwr) -> None:
    from tdm_r1.apps.arena.grid import cell_hash, default_cells, select_cells
    from tdm_r1.config import to_dict
    from tdm_r1.registry import METHODS
    from tdm_r1.train.config import load_train_config

    recipe = str(PLUGINS / "toy-rwr-4step-ocr.yaml")
    cfg = load_train_config(recipe, overrides=["method.rwr.beta=0.5"])
    assert cfg.method_name == "rwr" and cfg.method.rwr == rwr.RwrOptions(beta=0.5)
    assert to_dict(cfg)["method"]["rwr"] == {"beta": 0.5, "max_weight": 10.0}
    with pytest.raises(ConfigError, match=r"unknown config key 'method.rwr.betta'.*Did you mean 'beta'"):
        load_train_config(recipe, overrides=["method.rwr.betta=1"])
    with pytest.raises(ConfigError, match="rwr: method.rwr.beta must be > 0"):
        METHODS.get("rwr").check(load_train_config(recipe, overrides=["method.rwr.beta=0"]), None)
    # a built-in config records no plug-in section: its identity (the arena's cell hash) does not
    # depend on which plug-ins a process loaded
    dgpo = load_train_config("toy-dgpo-4step-ocr")
    assert "rwr" not in to_dict(dgpo)["method"] and {"flow_grpo", "diffusionnft", "dgpo"} <= set(
        to_dict(dgpo)["method"]
    )
    before = cell_hash(dgpo, {"toy-ocr-rl": "1"})
    METHODS.remove("rwr")
    assert cell_hash(load_train_config("toy-dgpo-4step-ocr"), {"toy-ocr-rl": "1"}) == before
    importlib.reload(rwr)  # registers it again, as a process that loads the plug-in does
    assert default_cells()[-1] == ("rwr", "toy-4step")
    cells = select_cells(methods=["rwr"], seeds=[0])
    assert [c.preset for c in cells] == [str(PLUGINS / f"toy-rwr-4step-{r}.yaml") for r in ("geneval", "ocr")]


def test_one_epoch_of_the_plugin_method_moves_the_generator_only(registered, rwr, tmp_path: Path) -> None:
    from tdm_r1.train.trainer import Trainer

    t = Trainer(trainkit.small_config(tmp_path, method={"name": "rwr", "rwr": {"beta": 0.5}}))
    t.setup()
    assert set(t.adapter.roles) == {"generator"} and set(t.opt) == {"generator"}
    base = {n: p.detach().clone() for n, p in t.adapter.transformer.named_parameters() if "lora_" not in n}
    before = [p.detach().clone() for p in t.adapter.role_parameters("generator")]
    metrics = t.train_epoch()
    after = [p.detach() for p in t.adapter.role_parameters("generator")]
    assert sum(float((a - b).abs().sum()) for a, b in zip(after, before, strict=True)) > 0
    for n, p in t.adapter.transformer.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n]), f"frozen base weight {n} changed"
    assert metrics["gen_loss"] > 0 and metrics["rwr_weight_max"] >= 1.0


def test_the_builtin_catalogue_matches_its_classes_and_configs_parse_without_torch() -> None:
    from tdm_r1.registry import METHODS

    for name in METHODS.names_in_order():
        meta, cls = METHODS.meta(name), METHODS.get(name)
        assert meta["builtin"] and meta["reward"] == cls.uses_reward and cls.name == name
    code = (
        "import sys\n"
        "from tdm_r1.train.config import load_train_config\n"
        "from tdm_r1.apps.arena.grid import select_cells\n"
        "cfg = load_train_config('toy-flow-grpo-4step-ocr', overrides=['method.flow_grpo.noise_level=0.5'])\n"
        "assert cfg.method.flow_grpo.noise_level == 0.5 and len(select_cells()) == 24\n"
        "assert 'torch' not in sys.modules, 'parsing a config imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
