"""The published TDM / TDM-R1 LoRAs load strictly through their presets (issue "Real size without a GPU", 3).

For each published file a synthetic checkpoint is written with exactly the layout its publisher's
code produces (:mod:`tdm_r1.testing.official_loras`: the real transformer on the meta device,
wrapped by peft with the publisher's ``LoraConfig`` and adapter name), then loaded by
``ModelPreset.load`` (the real architecture on the meta device stands in for the pipeline
download): 0 missing, 0 unexpected, and the scale the publisher runs the LoRA at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tdm_r1.errors import ShapeError
from tdm_r1.models.ema_layouts import LAYOUTS
from tdm_r1.models.families import adapter_class
from tdm_r1.registry import MODELS
from tdm_r1.testing.meta_models import meta_adapter
from tdm_r1.testing.official_loras import PUBLISHED, publisher_layout, write_synthetic_ema

#: preset -> tensors in the published file, and the width of every wrapped projection (config.json)
EXPECTED = {"tdm-sd3.5-medium-4step": (382, 1536), "z-image-4step": (272, 3840)}


@pytest.fixture(scope="module", params=sorted(PUBLISHED))
def published(request: pytest.FixtureRequest) -> tuple[str, list[tuple[str, tuple[int, ...]]]]:
    name = request.param
    return name, publisher_layout(PUBLISHED[name])


def _load(name: str, ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``ModelPreset.load`` of preset ``name`` with ``ckpt`` as its LoRA, the pipeline on the meta device."""
    preset = MODELS.get(name)
    model = PUBLISHED[name].model
    folder = tmp_path / "pipeline"  # what resolve_pipeline checks; from_pretrained is replaced below
    folder.mkdir(exist_ok=True)
    (folder / "model_index.json").write_text("{}")
    built = meta_adapter(model, roles=(), text_encoders=False)

    def from_pretrained(cls: type, source: str, **kwargs: Any) -> Any:
        assert source == str(folder)
        return built

    monkeypatch.setattr(adapter_class(preset.family), "from_pretrained", classmethod(from_pretrained))
    return preset.load(device="cpu", dtype="bfloat16", model_path=folder, lora_path=ckpt)


def test_the_publishers_layout_is_the_recorded_one(published) -> None:
    name, layout = published
    count, width = EXPECTED[name]
    assert len(layout) == count
    assert {shape for _, shape in layout} == {(32, width), (width, 32)}
    assert tuple(n for n, _ in layout) == LAYOUTS[MODELS.get(name).lora.key].names


def test_official_checkpoint_loads_strictly_at_the_published_scale(
    published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, layout = published
    lora, preset = PUBLISHED[name], MODELS.get(name)
    ckpt = write_synthetic_ema(tmp_path / preset.lora.filename, [s for _, s in layout])
    adapter = _load(name, ckpt, tmp_path, monkeypatch)
    report = adapter.roles.load_report("generator")
    count = EXPECTED[name][0]
    assert (report.expected, report.loaded, report.missing, report.unexpected) == (count, count, (), ())
    assert (report.rank, report.alpha) == (lora.rank, lora.alpha) == (preset.lora_rank, preset.lora_alpha)
    assert report.scaling == lora.scaling == 2.0
    assert adapter.roles.scale("generator") == lora.scale == 1.0
    layers = [m for m in adapter.transformer.modules() if "generator" in getattr(m, "scaling", {})]
    assert len(layers) == count // 2 and {m.scaling["generator"] for m in layers} == {2.0}
    assert all(p.is_meta for p in adapter.roles.parameters("generator"))  # no weights were materialised


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_a_missing_or_extra_tensor_is_refused_in_one_line(
    published, change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, layout = published
    shapes = [s for _, s in layout]
    shapes = shapes[:-1] if change == "missing" else [*shapes, shapes[0]]
    ckpt = write_synthetic_ema(tmp_path / "ema.ckpt", shapes)
    with pytest.raises(ShapeError) as info:
        _load(name, ckpt, tmp_path, monkeypatch)
    message = str(info.value)
    assert "\n" not in message and f"has {len(shapes)} tensors" in message and str(len(layout)) in message


def test_peft_files_are_checked_by_name_in_one_line(tmp_path: Path) -> None:
    """The other loading path (peft / diffusers files, tensors by name) is strict too."""
    from safetensors.torch import save_file

    from tdm_r1.models.sd3 import SD3Adapter
    from tdm_r1.models.spec import SamplingSpec
    from tdm_r1.testing.tiny import tiny_sd3_pipeline

    ad = SD3Adapter.from_pipeline(
        tiny_sd3_pipeline(seed=0), sampling=SamplingSpec(steps=2, height=32, width=32), device="cpu"
    )
    ad.roles.add("generator", rank=4, alpha=8.0)
    state = {f"transformer.{k}": v for k, v in ad.roles.state("generator").items()}
    good = tmp_path / "good.safetensors"
    save_file(state, str(good))
    report = ad.roles.load("generator", good)
    assert (report.loaded, report.expected, report.missing, report.unexpected) == (30, 30, (), ())
    first = next(iter(state))
    for label, bad in (
        ("1 missing", {k: v for k, v in state.items() if k != first}),
        ("1 unexpected", {**state, "transformer.extra.lora_A.weight": torch.zeros(4, 16)}),
    ):
        path = tmp_path / "bad.safetensors"
        save_file(bad, str(path))
        with pytest.raises(ShapeError) as info:
            ad.roles.load("generator", path)
        assert "\n" not in str(info.value) and label in str(info.value)
