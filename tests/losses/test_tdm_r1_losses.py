"""The TDM / TDM-R1 math: exact values, limits and gradient directions."""

from __future__ import annotations

import math

import pytest
import torch

from tdm_r1.flow import shift_sigma, unshift_sigma
from tdm_r1.losses.advantages import group_advantages
from tdm_r1.losses.noise import (
    renoise,
    renoise_coefficients,
    sample_sigma_above,
    surrogate_velocity_target,
)
from tdm_r1.losses.tdm_r1 import fake_score_loss, generator_loss, surrogate_loss


def test_group_advantages_exact_values_and_zero_std_groups() -> None:
    r = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, float("nan"), 4.0])
    g = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    out = group_advantages(r, g, std="group", eps=0.0)
    # group 0: mean 2, population std 1 -> [-1, 1]; group 1 flat -> 0; group 2: {0, 4} mean 2 std 2
    assert out.values.tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0, -1.0, 0.0, 1.0])
    assert out.zero_std_groups == 1 and out.groups == 3 and out.nan_rewards == 1
    glob = group_advantages(r, g, std="global", eps=0.0)
    s = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, 4.0]).std(unbiased=False).item()
    assert glob.values[0].item() == pytest.approx(-1.0 / s)
    assert glob.values[2].item() == 0.0  # flat group stays 0 under the global std
    clipped = group_advantages(
        torch.tensor([0.0, 0.0, 0.0, 100.0]), torch.zeros(4, dtype=torch.long), clip=1.5
    )
    assert clipped.values.max().item() == 1.5


def test_shift_roundtrip_and_sampling_bounds() -> None:
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(unshift_sigma(shift_sigma(t, 3.0), 3.0), t, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    sigma_n = torch.tensor([0.0, 0.25, 0.5, 0.75] * 250)
    s = sample_sigma_above(sigma_n, t_min=300, shift=1.0, margin=20, generator=gen)
    assert bool((s >= torch.maximum(sigma_n + 0.02, torch.tensor(0.3)) - 1e-6).all()) and bool((s <= 1).all())


@pytest.mark.parametrize(
    ("t_min", "expected"),
    [(300, 0.337), (550, 0.573), (250, 0.290), (400, 0.431)],  # OCR, GenEval reward, GenEval query, IR/HPS
)
def test_t_min_is_in_shifted_timesteps_like_the_public_code(t_min: float, expected: float) -> None:
    """At shift 3 the smallest query sigma for a clean boundary is shift(unshift(t_min) + 20 steps)."""
    s = sample_sigma_above(torch.zeros(3), t_min=t_min, shift=3.0, margin=20, u=torch.zeros(3))
    assert s.tolist() == pytest.approx([expected] * 3, abs=5e-4)
    # a boundary above t_min is its own bound (plus the margin), as before
    s_hi = sample_sigma_above(torch.tensor([0.9]), t_min=t_min, shift=3.0, margin=20, u=torch.zeros(1))
    assert float(s_hi) == pytest.approx(float(shift_sigma(unshift_sigma(torch.tensor(0.9), 3.0) + 0.02, 3.0)))


def test_renoise_has_the_right_marginal() -> None:
    sn = torch.tensor([0.0, 0.3, 0.6])
    st = torch.tensor([0.5, 0.7, 0.9])
    a, b = renoise_coefficients(sn, st)
    assert torch.allclose((a * sn) ** 2 + b**2, st**2)  # total noise std = sigma_tau
    assert torch.allclose(a * (1 - sn), 1 - st)  # signal scale = 1 - sigma_tau
    x0 = torch.randn(3, 1, 1, 1)
    noise = torch.randn(3, 1, 1, 1)
    x_n = (1 - sn.view(-1, 1, 1, 1)) * x0 + sn.view(-1, 1, 1, 1) * noise
    x_tau, _, _ = renoise(x_n, sn, st, torch.zeros_like(x0))
    assert torch.allclose(x_tau, (1 - st.view(-1, 1, 1, 1)) * x0 + (a * sn).view(-1, 1, 1, 1) * noise)


def test_surrogate_target_reduces_to_flow_matching_for_clean_boundaries() -> None:
    x0 = torch.randn(4, 2, 3, 3)
    eps = torch.randn_like(x0)
    sn = torch.zeros(4)
    st = torch.tensor([0.2, 0.4, 0.6, 0.8])
    x_tau, a, b = renoise(x0, sn, st, eps)
    v = surrogate_velocity_target(x0, sn, st, eps, a, b)
    assert torch.allclose(v, eps - x0, atol=1e-6)
    assert torch.allclose(x_tau - st.view(-1, 1, 1, 1) * v, x0, atol=1e-6)  # x0 = x - s v


def test_generator_loss_gradient_follows_the_directions() -> None:
    x0 = torch.zeros(2, 1, 2, 2, requires_grad=True)
    ones = torch.ones(2, 1, 2, 2)
    out = generator_loss(
        x0,
        cond_x0=ones * 1.0,
        uncond_x0=ones * 0.5,
        fake_x0=ones * 0.25,
        guided_x0=ones * 2.0,  # normaliser mean|x0 - guided| = 2
        cfg_reward_scale=3.5,
        surrogate_x0=ones * 0.4,
        ref_x0=ones * 0.1,
        w_kl=1.0,
        w_cfg=0.3,
        w_rl=0.7,
    )
    out.loss.backward()
    numel = x0.numel()
    kl, cfg, rl = 0.75, 3.5 * 0.5, 0.3  # the three directions (constant per element)
    expected = -2 * (1.0 * kl / 2 + 0.3 * cfg / 2 + 0.7 * rl / 0.4) / numel
    assert torch.allclose(x0.grad, torch.full_like(x0, expected), atol=1e-6)
    assert out.kl == pytest.approx(kl**2 / 2) and out.cfg == pytest.approx(cfg**2 / 2)
    assert out.rl == pytest.approx(rl**2 / 0.4)
    with pytest.raises(ValueError, match="surrogate_x0"):
        generator_loss(
            x0, cond_x0=ones, uncond_x0=ones, fake_x0=ones, guided_x0=ones, cfg_reward_scale=1, w_rl=1
        )


def test_fake_score_loss_is_zero_at_the_dsm_target() -> None:
    x0 = torch.randn(3, 2, 2, 2)
    noise = torch.randn_like(x0)
    s = torch.tensor([0.3, 0.6, 0.9])
    x_tau = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * noise
    v = noise - x0
    assert fake_score_loss(v, x_tau=x_tau, x0_gen=x0, sigma_tau=s, v_real=v).item() == pytest.approx(
        0, abs=1e-10
    )
    assert fake_score_loss(v + 1, x_tau=x_tau, x0_gen=x0, sigma_tau=s).item() == pytest.approx(1.0)


def _surrogate(l_phi: torch.Tensor, adv: torch.Tensor, **kw):
    n = len(adv)
    defaults = dict(
        l_ref=torch.ones(n),
        l_old=l_phi.detach().clone(),
        reg=torch.zeros(n, requires_grad=True),
        adv=adv,
        group_index=torch.zeros(n, dtype=torch.long),
        n_groups=1,
        group_size=n,
        beta_dpo=1.0,
        clip_range=1e-3,
    )
    defaults.update(kw)
    return surrogate_loss(l_phi, **defaults)


def test_surrogate_loss_pushes_good_samples_down_and_bad_up() -> None:
    l_phi = torch.ones(4, requires_grad=True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    out = _surrogate(l_phi, adv)
    out.loss.backward()
    w = 1 / (1 + math.exp(-0.0))  # sigmoid(beta/G * sum A (l - l_ref)) = sigmoid(0) = 0.5
    assert l_phi.grad.tolist() == pytest.approx([w / 4, w / 4, -w / 4, -w / 4])
    assert out.group_weight_mean == pytest.approx(0.5)


def test_surrogate_group_weight_saturates_when_preference_is_learned() -> None:
    adv = torch.tensor([1.0, -1.0])
    learned = _surrogate(torch.tensor([0.0, 2.0], requires_grad=True), adv, beta_dpo=10.0)
    # sum A (l - l_ref) = (0 - 1) - (2 - 1) = -2 -> sigmoid(10/2 * -2) ~ 0
    assert learned.group_weight_mean == pytest.approx(1 / (1 + math.exp(10.0)), rel=1e-4)


def test_surrogate_ppo_clip_detaches_samples_past_the_trust_region() -> None:
    l_phi = torch.tensor([1.0, 1.0], requires_grad=True)
    adv = torch.tensor([1.0, 1.0])
    # sample 0 already improved a lot vs the old surrogate (ratio = e^(1.5 - 1) > 1 + clip): no grad
    out = _surrogate(l_phi, adv, l_old=torch.tensor([1.5, 1.0]))
    out.loss.backward()
    assert l_phi.grad[0].item() == 0.0 and l_phi.grad[1].item() > 0
    assert out.clipped_fraction == pytest.approx(0.5)


def test_surrogate_reference_drift_clip_and_anchor() -> None:
    l_phi = torch.tensor([0.5, 1.5], requires_grad=True)  # both already beat the reference (l_ref = 1)
    reg = torch.tensor([0.1, 0.1], requires_grad=True)
    out = _surrogate(
        l_phi, torch.tensor([1.0, -1.0]), reg=reg, reg_threshold=0.05, anchor_beta=0.5, time_weight=0.5
    )
    out.loss.backward()
    assert out.drift_clip_active and out.drift == pytest.approx(0.1)
    assert l_phi.grad.abs().sum().item() == 0.0  # detached by the drift clip
    assert reg.grad.tolist() == pytest.approx([0.5 * 0.5 / 2] * 2)  # time_weight * anchor / N


def test_surrogate_group_sums_use_the_all_reduce_hook() -> None:
    calls = []

    def fake_reduce(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape)
        return t * 2  # as if a second rank held identical samples

    l_phi = torch.tensor([0.0, 2.0], requires_grad=True)
    out = _surrogate(l_phi, torch.tensor([1.0, -1.0]), beta_dpo=1.0, all_reduce=fake_reduce)
    assert calls and out.group_weight_mean == pytest.approx(1 / (1 + math.exp(2.0)), rel=1e-5)
