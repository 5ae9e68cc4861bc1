"""Model families in the one Registry, device/dtype defaults, and the model layer's import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdm_r1.devices import resolve_device, resolve_dtype
from tdm_r1.errors import ConfigError
from tdm_r1.models.families import FAMILIES, adapter_class, family_of_pipeline, register_family
from tdm_r1.models.preset import ModelPreset
from tdm_r1.models.spec import SamplingSpec

ROOT = Path(__file__).resolve().parents[2]


def test_families_resolve_lazily_to_adapter_classes() -> None:
    from tdm_r1.models.sd3 import SD3Adapter
    from tdm_r1.models.z_image import ZImageAdapter

    assert FAMILIES.names() == ["sd3", "z-image"]
    assert adapter_class("sd3") is SD3Adapter and adapter_class("z-image") is ZImageAdapter
    family, sampling = family_of_pipeline("ZImagePipeline")
    assert family == "z-image" and sampling.spacing == "zero-terminal" and sampling.nfe == 8
    with pytest.raises(
        ConfigError, match="'FluxPipeline' is not supported; supported: StableDiffusion3Pipeline"
    ):
        family_of_pipeline("FluxPipeline")
    with pytest.raises(ConfigError, match="'module:Class'"):
        register_family("flux", "tdm_r1.models.flux.FluxAdapter")
    register_family("sd3-plugin", "tdm_r1.models.sd3:SD3Adapter")  # e.g. from a plugin
    try:
        assert adapter_class("sd3-plugin") is SD3Adapter
        preset = ModelPreset(name="p", family="sd3-plugin", hub_id="a/b", sampling=SamplingSpec(steps=2))
        assert preset.family == "sd3-plugin"
    finally:
        FAMILIES.remove("sd3-plugin")
    with pytest.raises(ConfigError, match="unknown family 'sd3-plugin'; valid: sd3, z-image"):
        ModelPreset(name="p", family="sd3-plugin", hub_id="a/b", sampling=SamplingSpec(steps=2))


def test_one_device_and_dtype_rule() -> None:
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype(None, "cpu") == torch.float32  # whatever the preset's accelerator dtype
    assert resolve_dtype(None, "cuda", "float16") == torch.float16
    assert resolve_dtype("bf16") == resolve_dtype("torch.bfloat16") == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
    with pytest.raises(ConfigError, match="invalid device 'gpu'"):
        resolve_device("gpu")


def test_presets_load_without_torch() -> None:
    code = (
        "import sys, tdm_r1.models.presets, tdm_r1.models.protocols; from tdm_r1.registry import MODELS; "
        "assert MODELS.get('toy-4step').nfe == 4; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _imports(path: Path) -> set[str]:
    """tdm_r1 modules imported by ``path`` at run time (top level or inside functions, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            out |= {n for n in names if n.startswith("tdm_r1")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tdm_r1")}
    return out


def test_the_model_layer_has_no_import_cycle() -> None:
    files = {
        "tdm_r1." + ".".join(p.relative_to(ROOT / "tdm_r1").with_suffix("").parts): p
        for p in (ROOT / "tdm_r1").rglob("*.py")
    }
    files = {m.removesuffix(".__init__"): p for m, p in files.items()}
    graph = {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [m for m in files if m.startswith("tdm_r1.models.") and m in reach(m)]
    assert cycles == [], f"modules that import themselves back: {cycles}"
    assert {"tdm_r1.models.adapter", "tdm_r1.models.preset"}.isdisjoint(reach("tdm_r1.models.sampling"))
