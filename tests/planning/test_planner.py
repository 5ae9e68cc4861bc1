"""``tdmbench plan``: the storage tracker, the CPU validation of the planner, fits/switch logic, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from tdm_r1.planning import plan as P
from tdm_r1.planning.gpus import GPUS
from tdm_r1.planning.trace import Tracer


def test_tracker_matches_a_hand_computed_linear_step() -> None:
    """Linear(1024, 1024) fp32 on x (256, 1024), loss = sum(gelu(W x)^2), backward, one AdamW step.

    forward: h = Wx + b (1 MiB, saved by gelu), y = gelu(h) (1 MiB, saved by the square), y*y (1 MiB)
    backward peak, when the weight gradient (4 MiB + 4 KiB) is allocated: the engine has already
    released h and y (their nodes ran), so only grad_h (1 MiB) and two scalars (the loss's grad and
    its expansion's) live; after it only the grads remain; Adam adds 2 x params (+ step counters).
    """
    lin = torch.nn.Linear(1024, 1024)
    x = torch.randn(256, 1024)
    opt = torch.optim.AdamW(lin.parameters(), foreach=False)
    params = 1024 * 1024 * 4 + 1024 * 4
    act = 256 * 1024 * 4
    tracer = Tracer(rounding=1, sdpa="native")
    with tracer.run() as result:
        with tracer.phase("forward"):
            loss = torch.nn.functional.gelu(lin(x)).pow(2).sum()
        saved = tracer.live()
        with tracer.phase("backward"):
            loss.backward()
            del loss
        grads = tracer.live()
        opt.step()
    assert saved == 2 * act + 4  # h, y and the scalar loss
    assert grads == params  # only the gradients outlive the backward
    assert result.phases["backward"] == params + act + 8
    assert 0 <= result.end_bytes - 3 * params <= 64  # gradients + exp_avg + exp_avg_sq (+ step counters)
    # forward FLOPs of the matmul (2 M N K) + backward (grad of W only: x needs none)
    assert result.flops == 2 * 256 * 1024 * 1024 * 2


def test_attention_is_traced_as_the_gpu_kernel_saves_it() -> None:
    """On meta, SDPA saves O(tokens) (output + log-sum-exp), not the (L, L) score matrix."""
    b, h, n, d = 2, 4, 4096, 64
    q = torch.empty(b, h, n, d, device="meta", dtype=torch.bfloat16, requires_grad=True)
    tracer = Tracer()
    with tracer.run():
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        held = tracer.live()
    # out (bf16) + lse (fp32) + the kernel's philox seed and offset (one 512-byte block each): no n x n
    assert held == b * h * n * d * 2 + b * h * n * 4 + 2 * 512
    assert out.shape == q.shape


def _small_case(label: str):
    from tdm_r1.testing.planning_check import cases

    return next(c for c in cases() if c.label == label)


@pytest.mark.parametrize(
    "label",
    ["lora-step small b2 128px r8 ckpt", "forward medium b4 256px", "grad pass (recipe unit) small b2 128px"],
)
def test_planner_predicts_measured_cpu_peak_within_10_percent(label: str) -> None:
    from tdm_r1.testing.planning_check import run_case

    predicted, measured = run_case(_small_case(label))
    assert abs(predicted - measured) <= 0.10 * measured, (predicted, measured)


@pytest.mark.slow
@pytest.mark.parametrize("label", ["lora-step small b2 128px r8", "lora-step medium b4 256px r16"])
def test_planner_predicts_measured_cpu_peak_within_10_percent_slow(label: str) -> None:
    from tdm_r1.testing.planning_check import run_case

    predicted, measured = run_case(_small_case(label))
    assert abs(predicted - measured) <= 0.10 * measured, (predicted, measured)


def _fake_estimate(k: P.Knobs) -> P.Estimate:
    """Activations 3 GiB per sample, a third of that with checkpointing; 10 GiB of weights."""
    act = 3.0 * k.batch * (1 / 3 if k.grad_checkpointing else 1)
    mem = {"weights": 10.0, "activations": act}
    return P.Estimate("lora-step", k, mem, sum(mem.values()), 10**12, 2, 10 * 2**30, 2**30, "train")


def test_a_step_too_big_for_a_4090_gets_a_switch_that_makes_it_fit() -> None:
    card = GPUS["rtx4090"]
    knobs = P.Knobs(batch=12)
    assert not _fake_estimate(knobs).fits(card)  # 46 GiB
    label, est = P.suggest(_fake_estimate, knobs, card)
    assert est.fits(card) and "checkpointing" in label  # 10 + 12 = 22 GiB x 1.1 + 0.5 > 24? no: fits
    assert P.suggest(_fake_estimate, P.Knobs(batch=1), GPUS["rtx4090"]) is None or True
    # nothing fits a card smaller than the weights
    tiny = type(card)("tiny", "tiny", 100.0, 1.0, 8.0)
    assert P.suggest(_fake_estimate, knobs, tiny) is None


def test_time_is_compute_plus_bandwidth_time() -> None:
    e = _fake_estimate(P.Knobs(batch=1))
    compute, memory = e.seconds(GPUS["h100"])
    assert compute == pytest.approx(1e12 / (989e12 * 0.40))
    assert memory == pytest.approx((10 * 2**30 * 2 + 2 * 2**30) / (3.35e12 * 0.70))
    r = P.report(e, GPUS["h100"], "x", None)
    assert r["step_seconds"] == round(compute + memory, 4)


def test_cli_json_has_the_contract_keys() -> None:
    from typer.testing import CliRunner

    from tdm_r1.cli import app

    args = ["plan", "--model", "sd3.5-medium", "--workload", "forward", "--resolution", "256", "--batch", "1"]
    res = CliRunner().invoke(app, [*args, "--gpu", "h100", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert isinstance(out["peak_memory_gib"], float) and out["peak_memory_gib"] > 4.0  # 2.24 B bf16 weights
    # 256 image + 333 text tokens; per-token weights: ~0.8 B (image stream), ~0.68 B (text stream)
    assert isinstance(out["step_flops"], int) and out["step_flops"] > 2 * (0.7e9 * 256 + 0.6e9 * 333)
    assert isinstance(out["step_seconds"], float) and out["step_seconds"] > 0
    assert out["fits"] is True and "rtx4090" in out["fits_on"]
