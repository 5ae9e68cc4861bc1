from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tdm_r1.errors import ConfigError, TdmError, UnknownNameError
from tdm_r1.registry import Registry, lazy_attributes


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


def _module_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_lazy_target_is_imported_on_first_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module_file(tmp_path, monkeypatch, "tdm_lazy_target", "class Backend:\n    class Inner:\n        pass\n")
    reg: Registry[type] = Registry("backend", targets={"fast": "tdm_lazy_target:Backend"})
    reg.add_lazy("inner", "tdm_lazy_target:Backend.Inner", aliases=("in",))
    assert reg.names() == ["fast", "inner"] and "in" in reg
    assert reg._entries["fast"].origin == "tdm_lazy_target:Backend"
    assert "tdm_lazy_target" not in sys.modules  # listing names and membership import nothing
    backend = reg.get("FAST")
    assert "tdm_lazy_target" in sys.modules and backend is sys.modules["tdm_lazy_target"].Backend
    assert reg.get("fast") is backend  # imported once, then kept
    assert reg.entry("fast").origin.endswith("tdm_lazy_target.py:1")
    assert reg.get("in") is backend.Inner  # dotted attribute, through an alias
    monkeypatch.delitem(sys.modules, "tdm_lazy_target")


def test_lazy_unknown_name_uses_the_did_you_mean_message() -> None:
    reg: Registry[type] = Registry(
        "detector", targets={"mask2former": "x.y:Z"}, hint="(pick one with --det.)"
    )
    with pytest.raises(UnknownNameError) as info:
        reg.get("mask2formr")
    assert str(info.value) == (
        "Unknown detector 'mask2formr'. Did you mean 'mask2former'? Available detectors: mask2former. "
        "(pick one with --det.)"
    )
    assert "tdmbench ls" not in str(info.value)


def test_lazy_target_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[type] = Registry("backend")
    with pytest.raises(ConfigError, match="must look like 'package.module:Attribute'"):
        reg.add_lazy("bad", "tdm_no_colon.Backend")
    reg.add_lazy("gone", "tdm_not_installed_pkg.sub:Backend")
    with pytest.raises(
        TdmError, match=r"backend 'gone' lives in tdm_not_installed_pkg.sub, which is not part"
    ):
        reg.get("gone")
    assert not reg._entries["gone"].loaded
    # an import error inside the target module is the module's own error (e.g. an install hint)
    _module_file(tmp_path, monkeypatch, "tdm_lazy_broken", "import tdm_missing_dependency_xyz\n")
    reg.add_lazy("broken", "tdm_lazy_broken:Backend")
    with pytest.raises(ModuleNotFoundError, match="tdm_missing_dependency_xyz"):
        reg.get("broken")
    _module_file(tmp_path, monkeypatch, "tdm_lazy_empty", "X = 1\n")
    reg.add_lazy("empty", "tdm_lazy_empty:Backend")
    with pytest.raises(TdmError, match="backend 'empty': module tdm_lazy_empty has no attribute 'Backend'"):
        reg.get("empty")


def test_remove_forgets_name_and_aliases() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1, aliases=("aa",))
    reg.add_lazy("b", "m:B")
    reg.remove("AA")
    reg.remove("nope")  # unknown: nothing to do
    assert reg.names() == ["b"] and "aa" not in reg
    reg.add("aa", 2)  # the alias is free again
    assert reg.get("aa") == 2


def test_lazy_attributes_serve_a_module_getattr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module_file(tmp_path, monkeypatch, "tdm_lazy_attr", "def Build():\n    return 7\n")
    getattr_ = lazy_attributes("pkg", {"Build": "tdm_lazy_attr:Build"})
    assert "tdm_lazy_attr" not in sys.modules
    assert getattr_("Build")() == 7  # exact name: attributes are not lowercased
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'build'"):
        getattr_("build")
    monkeypatch.delitem(sys.modules, "tdm_lazy_attr")

    import tdm_r1.eval as tev

    assert tev.read_meta is importlib.import_module("tdm_r1.eval.results").read_meta
    assert not hasattr(tev, "no_such_thing")


def test_weight_manifest_is_a_registry_that_loads_its_declaring_modules() -> None:
    from tdm_r1 import weights

    assert "pickscore.model" in weights.MANIFEST and "sd3.5-medium.pipeline" in weights.MANIFEST
    assert weights.MANIFEST["geneval.clip"].hub_id == "openai/clip-vit-large-patch14"
    with pytest.raises(UnknownNameError, match=r"Did you mean 'pickscore.model'.*`tdmbench weights list`"):
        weights.MANIFEST.get("pickscore.modle")
