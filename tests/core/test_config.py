from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tdm_r1.config import dump_yaml, load_config, parse_override, to_dict
from tdm_r1.errors import ConfigError


@dataclass
class Optim:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Cfg:
    name: str = "run"
    group_size: int = 8
    use_ema: bool = True
    optim: Optim = field(default_factory=Optim)
    rewards: dict[str, float] = field(default_factory=lambda: {"ocr": 1.0})
    note: str | None = None

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ConfigError("group_size must be >= 2")


def test_precedence_yaml_then_set_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("group_size: 4\noptim:\n  lr: 1.0e-3\n")
    cfg = load_config(
        Cfg,
        yaml_path=path,
        overrides=["optim.lr=2e-3", "group_size=6"],
        flags={"group_size": 12, "name": None},
    )
    assert cfg.group_size == 12  # flag beats --set beats yaml
    assert cfg.optim.lr == pytest.approx(2e-3)  # --set beats yaml
    assert cfg.name == "run"  # None flag = not given
    assert cfg.optim.betas == (0.9, 0.999)


def test_unknown_key_is_an_error_with_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*Did you mean 'lr'"):
        load_config(Cfg, overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="group_sise.*Did you mean 'group_size'"):
        load_config(Cfg, data={"group_sise": 3})


def test_types_are_coerced_and_checked() -> None:
    cfg = load_config(Cfg, overrides=["use_ema=false", "optim.betas=[0, 0.95]", "note=hello"])
    assert cfg.use_ema is False and cfg.optim.betas == (0.0, 0.95) and cfg.note == "hello"
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(Cfg, overrides=["group_size=2.5"])
    with pytest.raises(ConfigError, match="true/false"):
        load_config(Cfg, overrides=["use_ema=maybe"])


def test_post_init_invariants_run() -> None:
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        load_config(Cfg, overrides=["group_size=1"])


def test_parse_override_and_roundtrip(tmp_path: Path) -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=x=y") == ("a", "x=y")
    with pytest.raises(ConfigError):
        parse_override("novalue")
    cfg = load_config(Cfg, overrides=["optim.lr=1e-5"])
    dump_yaml(cfg, tmp_path / "out.yaml")
    again = load_config(Cfg, yaml_path=tmp_path / "out.yaml")
    assert to_dict(again) == to_dict(cfg)
