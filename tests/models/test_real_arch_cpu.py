"""Real architectures on the CPU (issue "Real size without a GPU", 2).

The full SD3.5-Medium transformer (2.24 B parameters, random bf16 weights) runs one TDM-R1
micro-step at 128 px, micro-batch 1, through the trainer's own roles, LoRA targets, method steps
and optimiser steps; the full Z-Image transformer (6.15 B) runs one 4-step sampling pass. Both are
``slow`` (``make test-slow``; a few minutes each on 2 cores, < 20 GiB). The same code path on
reduced configurations runs in the default suite. With ``TDMBENCH_PERF_OUT=results/perf/real_arch_cpu.md``
the slow tests write their time and peak memory there (:func:`tdm_r1.testing.real_size_runs.write_record`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

import pytest

from tdm_r1.models.preset import SD3_LORA_TARGETS
from tdm_r1.testing.real_size_runs import Run, tdm_r1_micro_step, write_record, z_image_pass

TRAINED, COPY = ("generator", "fake", "surrogate"), "surrogate_old"
REDUCED_SD3 = {
    "num_layers": 2,
    "num_attention_heads": 2,
    "caption_projection_dim": 128,
    "dual_attention_layers": (0,),
}
REDUCED_Z_IMAGE = {"dim": 256, "n_heads": 2, "n_kv_heads": 2, "n_layers": 1, "n_refiner_layers": 1}


def check_micro_step(run: Run, lora_tensors: int) -> None:
    """Finite losses; gradients on the trained roles only; they moved, the copy followed, the base did not."""
    for key in ("fake_loss", "surrogate_loss", "gen_loss"):
        assert math.isfinite(run.metrics[key]), (key, run.metrics)
    for role in TRAINED:
        with_grad, nonzero, finite = run.grads[role]
        assert with_grad == lora_tensors and nonzero > 0 and finite, (role, run.grads[role])
        assert run.digests_after[role] != run.digests_before[role], role
    assert run.grads[COPY] == (0, 0, True) and run.base_grads == 0
    assert run.digests_before[COPY] == run.digests_before["surrogate"]  # a copy of the surrogate
    assert run.copy_follows  # after_update: the soft update towards the new surrogate, nothing else
    assert run.digests_after["base"] == run.digests_before["base"]  # frozen base: bit-identical
    assert run.output["roles"] == [*TRAINED, COPY] and run.output["trainable"] == list(TRAINED)
    assert run.output["targets"] == sorted(SD3_LORA_TARGETS)  # attn.* only: not the dual attention attn2
    assert run.output["updates"] == dict.fromkeys(TRAINED, 1)


def check_pass(run: Run, lora_tensors: int) -> None:
    out = run.output
    assert out["nfe"] == 4 and out["shape"] == [1, 16, 16, 16] and out["finite"] and out["std"] > 0
    assert out["lora_tensors"] == lora_tensors


def test_the_real_size_path_on_reduced_configurations() -> None:
    """The slow tests' code and checks, on 2-layer models (seconds): a broken path fails here first."""
    check_micro_step(tdm_r1_micro_step(overrides=REDUCED_SD3), lora_tensors=30)
    check_pass(z_image_pass(overrides=REDUCED_Z_IMAGE), lora_tensors=24)


@pytest.fixture(scope="module")
def record() -> Iterator[list[Run]]:
    runs: list[Run] = []
    start = time.perf_counter()
    yield runs
    out = os.environ.get("TDMBENCH_PERF_OUT")
    if out and runs:
        write_record(runs, out, total_s=time.perf_counter() - start)


@pytest.mark.slow
def test_full_sd35_medium_tdm_r1_micro_step(record: list[Run]) -> None:
    run = tdm_r1_micro_step(128)
    record.append(run)
    assert run.parameters == 2_243_171_520
    check_micro_step(run, lora_tensors=382)  # 191 attention projections x (A, B): the TDM LoRA layout
    assert run.peak_gib < 20


@pytest.mark.slow
def test_full_z_image_4step_sampling_pass(record: list[Run]) -> None:
    run = z_image_pass(128)
    record.append(run)
    assert run.parameters == 6_154_908_736
    check_pass(run, lora_tensors=272)  # the TDM-R1 Z-Image LoRA layout
    assert run.peak_gib < 20
