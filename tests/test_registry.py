from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tdm_r1.errors import ConfigError, UnknownNameError
from tdm_r1.registry import Registry


def test_register_get_alias_and_did_you_mean() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("pickscore", 1, aliases=("pick",))
    reg.add("hpsv2.1", 2, aliases=("hps",))
    assert reg.get("pickscore") == 1
    assert reg.get("HPS") == 2
    assert reg.canonical("pick") == "pickscore"
    assert "hps" in reg and "nope" not in reg
    assert reg.names() == ["hpsv2.1", "pickscore"]
    with pytest.raises(UnknownNameError) as info:
        reg.get("pickscor")
    msg = str(info.value)
    assert "Did you mean 'pickscore'" in msg
    assert "hpsv2.1" in msg and "tdmbench ls widgets" in msg


def test_collisions_and_bad_names_are_errors() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("b", 2, aliases=("a",))
    with pytest.raises(ConfigError, match="lowercase"):
        reg.add("Bad", 3)


def test_builtins_module_is_imported_on_first_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[str] = Registry("thing", builtins=("tdm_fake_builtins",))
    (tmp_path / "tdm_fake_builtins.py").write_text("import tests_registry_target as t\nt.REG.add('x', 'X')\n")
    target = type(sys)("tests_registry_target")
    target.REG = reg
    monkeypatch.setitem(sys.modules, "tests_registry_target", target)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tdm_fake_builtins" not in sys.modules
    assert reg.get("x") == "X"
    assert "tdm_fake_builtins" in sys.modules
    monkeypatch.delitem(sys.modules, "tdm_fake_builtins")


def test_decorator_records_origin() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("my-thing")
    class Thing:
        pass

    assert reg.get("my-thing") is Thing
    assert "test_registry.py:" in reg.entry("my-thing").origin
