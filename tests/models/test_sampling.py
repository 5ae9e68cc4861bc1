"""Sampler schedules and solvers against the diffusers schedulers (no transformer needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from tdm_r1.errors import ConfigError
from tdm_r1.flow import cfg as guided_velocity
from tdm_r1.models.conditioning import Conditioning
from tdm_r1.models.sampling import sample
from tdm_r1.schedule import calculate_shift, count_passes, flow_schedule, nfe
from tdm_r1.seeds import derive_seed


def flow_sigmas(steps: int, **kw) -> torch.Tensor:
    return flow_schedule(steps, **kw).sigmas


def _dpm(shift: float) -> DPMSolverMultistepScheduler:
    """TDM / TDM-R1's scheduler: the Sana DPM-Solver config with flow sigmas and flow_shift."""
    return DPMSolverMultistepScheduler(
        use_flow_sigmas=True,
        flow_shift=shift,
        prediction_type="flow_prediction",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        final_sigmas_type="zero",
        lower_order_final=True,
    )


@pytest.mark.parametrize("steps", [1, 4, 9, 28, 40])
@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_euler_flowmatch_equals_sd3_scheduler(steps: int, shift: float) -> None:
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    ours = flow_schedule(steps, shift=shift)
    assert torch.equal(ours.sigmas, sched.sigmas)
    assert torch.equal(ours.model_sigmas * 1000, sched.timesteps)


@pytest.mark.parametrize("steps", [5, 9, 50])
def test_zero_terminal_equals_old_z_image_pipeline(steps: int) -> None:
    """ZImagePipeline <= 0.36 set ``scheduler.sigma_min = 0`` before ``set_timesteps(steps, mu=...)``."""
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.sigma_min = 0.0
    sched.set_timesteps(steps, mu=0.9)  # mu is ignored without dynamic shifting (Turbo's config)
    ours = flow_sigmas(steps, shift=3.0, spacing="zero-terminal")
    assert torch.equal(ours, sched.sigmas)
    assert float(ours[-2]) == 0.0  # the last scheduled step has zero length
    assert count_passes(steps, spacing="zero-terminal") == steps - 1


def test_z_image_default_sigmas_equal_current_pipeline() -> None:
    sched = FlowMatchEulerDiscreteScheduler(shift=6.0)
    steps = 50
    sched.set_timesteps(steps, sigmas=torch.linspace(1.0, 1 / steps, steps).tolist())
    assert torch.allclose(flow_sigmas(steps, shift=6.0, spacing="z-image"), sched.sigmas, atol=1e-7, rtol=0)


def test_dynamic_shift_equals_scheduler() -> None:
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    mu = calculate_shift(64 * 64)
    sched.set_timesteps(8, mu=mu)
    assert torch.allclose(flow_sigmas(8, mu=mu), sched.sigmas, atol=1e-7, rtol=0)
    assert calculate_shift(256) == pytest.approx(0.5) and calculate_shift(4096) == pytest.approx(1.15)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_dpm_schedule_equals_scheduler(steps: int, shift: float) -> None:
    sched = _dpm(shift)
    sched.set_timesteps(steps)
    ours = flow_schedule(steps, shift=shift, solver="dpmsolver++")
    assert torch.equal(ours.sigmas, sched.sigmas)
    assert torch.equal((ours.model_sigmas * 1000).round().long(), sched.timesteps)


def test_tdm_schedule_known_values() -> None:
    """DPM-Solver, flow sigmas, shift 3, 4 steps -> 0.99967, 0.89964, 0.74962, 0.49967; t = 999..499.

    TDM-R1's SD3.5 sampler (Luo-Yihong/TDM-R1 ``scripts/train_tdmr1_pub.py``, ``config/tdmr1_clean.py``);
    the values follow from diffusers' ``DPMSolverMultistepScheduler`` with ``use_flow_sigmas``
    (timesteps cast to int).
    """
    s = flow_schedule(4, shift=3.0, solver="dpmsolver++")
    assert s.sigmas[:4].tolist() == pytest.approx([0.99967, 0.89964, 0.74962, 0.49967], abs=5e-6)
    assert (s.model_sigmas * 1000).round().long().tolist() == [999, 899, 749, 499]
    assert (
        flow_schedule(4, shift=6.0, solver="dpmsolver++").model_sigmas * 1000
    ).round().long().tolist() == [
        999,
        947,
        856,
        666,
    ]
    assert s.passes == 4 and s.steps == 4


def test_schedule_errors_teach() -> None:
    with pytest.raises(ConfigError, match="valid: euler, dpmsolver"):
        flow_schedule(4, solver="heun")
    with pytest.raises(ConfigError, match="spacing"):
        flow_schedule(4, spacing="karras")
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        flow_schedule(0)


def test_derive_seed_is_stable_and_distinct() -> None:
    assert derive_seed(0, 0, 0) == derive_seed(0, 0, 0)
    seeds = {derive_seed(s, i, j) for s in range(3) for i in range(20) for j in range(4)}
    assert len(seeds) == 3 * 20 * 4
    assert all(0 <= s < 2**63 for s in seeds)
    assert (
        derive_seed(0, 1, 2)
        == int.from_bytes(__import__("hashlib").sha256(b"0:1:2").digest()[:8], "big") >> 1
    )


# ------------------------------------------------------------------------------ solvers vs diffusers
class FieldAdapter:
    """A fake adapter whose 'velocity' is a fixed smooth function of (x, sigma, condition)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning, role: str | None = None
    ) -> torch.Tensor:
        self.calls.append((x.shape[0], float(sigma[0])))
        c = cond.embeds.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return torch.sin(x + c) * (0.5 + sigma.view(-1, 1, 1, 1)) + 0.3 * x


def _cond(n: int, value: float) -> Conditioning:
    return Conditioning(embeds=torch.full((n, 3, 4), value))


def _diffusers_loop(sched, fn, x: torch.Tensor, cond_value: float) -> torch.Tensor:
    for t in sched.timesteps:
        sigma = torch.full((x.shape[0],), float(t) / 1000)
        v = fn.velocity(x, sigma, _cond(x.shape[0], cond_value))
        x = sched.step(v, t, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_dpm_solver_matches_scheduler_steps(steps: int) -> None:
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    sched = _dpm(3.0)
    sched.set_timesteps(steps)
    ref = _diffusers_loop(sched, FieldAdapter(), x.clone(), 0.2)
    traj = sample(FieldAdapter(), _cond(2, 0.2), x, flow_schedule(steps, shift=3.0, solver="dpmsolver++"))
    assert torch.allclose(traj.final, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_euler_matches_scheduler_steps(steps: int) -> None:
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(steps)
    ref = _diffusers_loop(sched, FieldAdapter(), x.clone(), -0.1)
    traj = sample(FieldAdapter(), _cond(2, -0.1), x, flow_schedule(steps, shift=3.0))
    assert torch.allclose(traj.final, ref, atol=1e-6, rtol=1e-6)


def test_trajectory_contents_and_convention() -> None:
    """x_s = (1 - s) x0 + s noise and v = noise - x0: a perfect velocity lands exactly on x0."""
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)

    class Perfect:
        def velocity(self, x, sigma, cond, role=None):  # noqa: ANN001, ANN202
            return noise - x0

    for solver in ("euler", "dpmsolver++"):
        sched = flow_schedule(4, shift=3.0, solver=solver)
        start = (1 - sched.sigmas[0]) * x0 + sched.sigmas[0] * noise
        traj = sample(Perfect(), _cond(3, 0.0), start, sched)
        assert traj.latents.shape == (3, 5, 4, 5, 5) and traj.sigmas.shape == (5,)
        assert torch.equal(traj.latents[:, 0], start)
        assert torch.allclose(traj.final, x0, atol=1e-5)
        assert traj.x0 is not None and torch.allclose(
            traj.x0, x0[:, None].expand(-1, 4, -1, -1, -1), atol=1e-5
        )
        for k in range(5):  # every boundary latent lies on the straight path
            s = sched.sigmas[k]
            assert torch.allclose(traj.latents[:, k], (1 - s) * x0 + s * noise, atol=1e-5)


def test_zero_length_steps_cost_no_pass() -> None:
    fn = FieldAdapter()
    sched = flow_schedule(5, shift=3.0, spacing="zero-terminal")
    traj = sample(fn, _cond(2, 0.1), torch.randn(2, 4, 6, 6), sched)
    assert traj.nfe == 4 == len(fn.calls) == sched.passes
    assert torch.equal(traj.latents[:, -1], traj.latents[:, -2])


def test_cfg_batches_uncond_and_cond_and_counts_two_passes() -> None:
    fn = FieldAdapter()
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    cond, uncond = _cond(2, 0.4), _cond(2, -0.2)
    traj = sample(fn, cond, x, flow_schedule(3, shift=3.0), guidance=3.0, uncond=uncond)
    assert traj.nfe == 6 and [c[0] for c in fn.calls] == [4, 4, 4]
    # one Euler step by hand
    s = flow_schedule(3, shift=3.0).sigmas
    v = guided_velocity(
        FieldAdapter().velocity(x, torch.full((2,), float(s[0])), cond),
        FieldAdapter().velocity(x, torch.full((2,), float(s[0])), uncond),
        3.0,
    )
    assert torch.allclose(traj.latents[:, 1], x + (s[1] - s[0]) * v, atol=1e-6)
    with pytest.raises(ConfigError, match="needs `uncond`"):
        sample(fn, cond, x, flow_schedule(3), guidance=2.0)


def test_guided_velocity_renorm_caps_the_norm() -> None:
    vc, vu = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    assert torch.equal(guided_velocity(vc, vu, 4.0), torch.full((2, 1, 2, 2), 4.0))
    capped = guided_velocity(vc, vu, 4.0, renorm=1.0)
    assert torch.allclose(capped.flatten(1).norm(dim=1), vc.flatten(1).norm(dim=1))


def test_sample_keeps_grad_only_when_asked() -> None:
    w = torch.tensor(0.5, requires_grad=True)

    class Linear:
        def velocity(self, x, sigma, cond, role=None):  # noqa: ANN001, ANN202
            return w * x

    x = torch.randn(1, 2, 3, 3)
    assert not sample(Linear(), _cond(1, 0.0), x, flow_schedule(2)).final.requires_grad
    traj = sample(Linear(), _cond(1, 0.0), x, flow_schedule(2), keep_grad=True)
    traj.final.sum().backward()
    assert w.grad is not None and np.isfinite(float(w.grad))


def test_nfe_counts_working_passes_and_doubles_with_cfg() -> None:
    # Z-Image-Turbo: 9 scheduled steps on a zero-terminal schedule are 8 passes; CFG doubles
    assert nfe(9, spacing="zero-terminal") == 8 and nfe(9, guidance=2.0, spacing="zero-terminal") == 16
    assert nfe(4, spacing="trailing") == 4 and nfe(28, guidance=4.5) == 56
    assert nfe(4, solver="dpmsolver++", shift=3.0) == flow_schedule(4, shift=3.0, solver="dpmsolver++").passes


def test_flow_math_by_hand() -> None:
    from tdm_r1.flow import euler_step, shift_sigma, unshift_sigma, x0_from_v

    x, v = torch.tensor([[[[2.0]]], [[[4.0]]]]), torch.tensor([[[[1.0]]], [[[-2.0]]]])
    s = torch.tensor([0.5, 0.25])
    assert x0_from_v(x, s, v).flatten().tolist() == [1.5, 4.5]  # x - s v, one sigma per sample
    assert euler_step(x, s, torch.tensor([0.25, 0.0]), v).flatten().tolist() == [1.75, 4.5]
    assert x0_from_v(x, 0.5, v).flatten().tolist() == [1.5, 5.0]  # a float broadcasts
    assert shift_sigma(0.5, 3.0) == pytest.approx(0.75) and unshift_sigma(0.75, 3.0) == pytest.approx(0.5)
    assert shift_sigma(np.array([0.0, 1.0]), 3.0).tolist() == [0.0, 1.0]


def test_schedule_and_flow_modules_import_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, tdm_r1.schedule, tdm_r1.flow, tdm_r1.seeds; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
