"""Real-size models on the meta device: built, wrapped with every role, identified and planned (issue "five traps", 5)."""

from __future__ import annotations

import time

import pytest
import torch

from tdm_r1.devices import move_module
from tdm_r1.models.ema_layouts import LAYOUTS
from tdm_r1.models.roles import NO_WEIGHTS, file_key
from tdm_r1.registry import MODELS


def test_move_module_skips_what_would_not_change() -> None:
    with torch.device("meta"):
        meta = torch.nn.Linear(4, 4)
    move_module(meta, torch.device("cpu"), torch.bfloat16)  # Module.to("cpu") would raise: no data to copy
    assert meta.weight.is_meta and meta.weight.dtype == torch.bfloat16
    real = torch.nn.Linear(4, 4)
    before = real.weight
    move_module(real, torch.device("cpu"), torch.float32)
    assert real.weight is before  # nothing changed, no Module.to()


@pytest.mark.parametrize(
    ("model", "wrapped", "per_role", "tokens"),
    [("sd3.5-medium", 191, 18_776_064, 205), ("z-image", 136, 33_423_360, 512)],
)
def test_real_size_model_builds_wraps_identifies_and_plans_on_meta(
    model: str, wrapped: int, per_role: int, tokens: int
) -> None:
    from tdm_r1.testing.meta_models import ALL_ROLES, PRESETS, meta_adapter, meta_plan

    start = time.perf_counter()
    adapter = meta_adapter(model)  # device="cpu": where the weights will go; every role of every method
    plan = meta_plan(adapter)
    identity = adapter.config_dict()
    assert time.perf_counter() - start < 60
    assert list(adapter.roles) == list(ALL_ROLES)
    for role, row in plan["roles"].items():
        assert (row["wrapped_modules"], row["parameters"]) == (wrapped, per_role), role
        assert row["digest"] == NO_WEIGHTS
        assert all(t.is_meta for t in adapter.roles.state(role).values())  # shapes, no data, no error
    assert identity["role"] == "generator" and identity["role_digest"] == NO_WEIGHTS
    assert identity["text_tokens"]["total"] == tokens == plan["text_tokens"]["total"]
    assert MODELS.get(PRESETS[model]).config_dict()["name"] == PRESETS[model]
    assert plan["nfe"] == 4 and plan["latent_shape"][0] == 16
    # the generator's tensor order is the published EMA checkpoint's (derived from the same architecture)
    preset = MODELS.get(PRESETS[model])
    names = [file_key(n, "generator") for n in adapter.roles.tensor_names("generator")]
    assert names == list(LAYOUTS[preset.lora.key].names)
    with pytest.raises(Exception, match="no weights"):
        adapter.roles.save("generator", "/nonexistent/never-written")
