"""TDM / TDM-R1 EMA checkpoints load by the publisher's parameter order (issue "five traps", 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tdm_r1.errors import ShapeError
from tdm_r1.models.ema_layouts import LAYOUTS, EmaLayout, layout_for, names_digest
from tdm_r1.models.roles import file_key
from tdm_r1.models.sd3 import SD3Adapter
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.registry import MODELS
from tdm_r1.testing.tiny import reorder_submodules, tiny_sd3_pipeline

SPEC = SamplingSpec(steps=2, height=32, width=32)


def test_every_published_checkpoint_has_a_pinned_layout() -> None:
    for name, count in (("tdm-sd3.5-medium-4step", 382), ("z-image-4step", 272)):
        layout = layout_for(MODELS.get(name).lora)
        assert layout is not None and len(layout.names) == count, name
        layout.check()
        assert names_digest(layout.names) == layout.sha256
    tampered = EmaLayout(
        key="x",
        names=LAYOUTS["tdm-sd3.5-medium.lora"].names[::-1],
        sha256=LAYOUTS["tdm-sd3.5-medium.lora"].sha256,
    )
    with pytest.raises(ShapeError, match="do not match the recorded sha256"):
        tampered.check()


def _adapter(reorder: bool = False) -> SD3Adapter:
    pipe = tiny_sd3_pipeline(seed=0)
    if reorder:  # a diffusers release that registers to_k before to_q
        assert (
            reorder_submodules(pipe.transformer, "to_k", before="to_q") == 3
        )  # 2 blocks + the dual attention
    ad = SD3Adapter.from_pipeline(pipe, sampling=SPEC, device="cpu")
    ad.roles.add("generator", rank=4, alpha=8.0)
    return ad


def _output(ad: SD3Adapter) -> torch.Tensor:
    """A fixed-seed velocity with the generator role: (2, 4, 16, 16)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 16, 16, generator=g)
    cond = ad.encode_prompts(["a red cube", "two cats"])
    return ad.velocity(x, torch.tensor([0.9, 0.4]), cond, role="generator")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmaLayout, torch.Tensor]:
    """A tiny 'published' checkpoint: random LoRA tensors in the publisher's order, its layout, its output."""
    ad = _adapter()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in ad.roles.parameters("generator"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    names = tuple(file_key(n, "generator") for n in ad.roles.tensor_names("generator"))
    layout = EmaLayout(key="tiny", names=names, sha256=names_digest(names), source="test")
    path = tmp_path_factory.mktemp("ema") / "ema.ckpt"
    torch.save({"ema_parameters": [p.detach().clone() for p in ad.roles.parameters("generator")]}, path)
    return path, layout, _output(ad)


def test_a_reordered_model_loads_the_checkpoint_by_name(published) -> None:
    path, layout, want = published
    same = _adapter()
    same.roles.load_tdm_ema("generator", path, layout=layout)
    assert torch.equal(_output(same), want)
    reordered = _adapter(reorder=True)
    reordered.roles.load_tdm_ema("generator", path, layout=layout)
    assert torch.equal(_output(reordered), want)  # to_q / to_k of every block placed by name


def test_without_a_layout_the_permutation_loads_silently_and_the_output_check_catches_it(published) -> None:
    path, _, want = published
    reordered = _adapter(reorder=True)
    reordered.roles.load_tdm_ema("generator", path)  # positional: count and shapes all pass
    assert (_output(reordered) - want).abs().max() > 1e-3


def test_other_names_are_refused_before_anything_is_copied(published) -> None:
    path, layout, _ = published
    ad = _adapter()
    before = [p.detach().clone() for p in ad.roles.parameters("generator")]
    wrong = EmaLayout(key="tiny", names=tuple(n.replace("to_q", "to_x") for n in layout.names), sha256="")
    wrong = EmaLayout(key="tiny", names=wrong.names, sha256=names_digest(wrong.names))
    with pytest.raises(ShapeError, match="absent on this model"):
        ad.roles.load_tdm_ema("generator", path, layout=wrong)
    assert all(torch.equal(a, b) for a, b in zip(before, ad.roles.parameters("generator"), strict=True))
