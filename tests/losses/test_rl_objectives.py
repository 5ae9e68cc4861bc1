"""The math of the arena's RL methods: Flow-GRPO's SDE and loss, DiffusionNFT, direct DGPO.

Values are hand-computed; gradient directions are checked by one SGD step on a tiny parameter.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from tdm_r1.flow import euler_step
from tdm_r1.losses.advantages import group_advantages
from tdm_r1.losses.dgpo import (
    DGPO_SD35M,
    DgpoHParams,
    denoising_errors,
    dgpo_loss,
    ema_ref_decay,
    train_step_indices,
)
from tdm_r1.losses.diffusionnft import (
    DIFFUSIONNFT_SD35M,
    DiffusionNftHParams,
    diffusionnft_loss,
    old_policy_decay,
    optimality_probability,
)
from tdm_r1.losses.flow_grpo import FLOW_GRPO_SD35M, FlowGrpoHParams, flow_grpo_loss, train_steps
from tdm_r1.losses.sde import (
    cps_log_prob,
    cps_mean_std,
    flow_sde_mean_std,
    flow_sde_scale,
    gaussian_log_prob,
    sde_step,
    step_log_prob,
)
from tdm_r1.schedule import flow_schedule


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ the SDE
def test_sde_without_noise_is_the_euler_step() -> None:
    x = torch.randn(3, 2, 4, 4, generator=_gen(0))
    v = torch.randn(3, 2, 4, 4, generator=_gen(1))
    s, s_next = torch.tensor([1.0, 0.7, 0.3]), torch.tensor([0.9, 0.5, 0.0])
    step = sde_step(x, s, s_next, v, torch.randn_like(x), noise_level=0.0, sigma_max=0.96)
    assert torch.equal(step.next, euler_step(x, s, s_next, v))  # bit for bit
    cps = sde_step(x, s, s_next, v, torch.randn_like(x), noise_level=0.0, kind="cps")
    assert torch.allclose(cps.next, euler_step(x, s, s_next, v), atol=1e-6)


def test_flow_sde_step_std_matches_the_reference_table_on_the_sd35_grid() -> None:
    """Per-step std s_t sqrt(|dt|) on the 10-step shift-3 grid with a = 0.7.

    The table is worked out by hand from Flow-GRPO's SDE (arXiv:2505.05470; yifan123/flow_grpo@ac4c86e
    ``sd3_sde_with_logprob.py``, which uses the second grid sigma at t = 1) and diffusers' Euler grid.
    """
    sig = flow_schedule(10, shift=3.0).sigmas
    x = torch.zeros(1, 1, 1, 1)
    stds = [
        float(flow_sde_mean_std(x, sig[i], sig[i + 1], x, 0.7, sigma_max=float(sig[1]))[1]) for i in range(10)
    ]
    table = [0.70, 0.74, 0.54, 0.45, 0.39, 0.35, 0.32, 0.28, 0.23, 0.006]
    assert stds == pytest.approx(table, abs=6e-3)
    assert float(flow_sde_scale(0.5, 0.7)) == pytest.approx(0.7)  # sqrt(0.5 / 0.5) = 1
    with pytest.raises(ValueError, match="sigma_max"):
        flow_sde_scale(torch.tensor([1.0, 0.5]), 0.7)


def test_step_log_prob_is_the_gaussian_density_and_peaks_at_the_mean() -> None:
    x = torch.randn(2, 1, 3, 3, generator=_gen(2))
    v = torch.randn_like(x)
    s, s_next = torch.tensor([0.8, 0.5]), torch.tensor([0.7, 0.4])
    step = sde_step(x, s, s_next, v, torch.randn(x.shape, generator=_gen(3)), noise_level=0.7)
    assert bool(torch.isfinite(step.log_prob).all())
    std = step.std.view(-1)
    # the exact density, summed over elements; the default reduction is its per-element mean
    exact = torch.distributions.Normal(step.mean, step.std.expand_as(step.mean)).log_prob(step.next)
    summed = gaussian_log_prob(step.next, step.mean, step.std, reduction="sum")
    assert torch.allclose(summed, exact.flatten(1).sum(1), atol=1e-4)
    assert torch.allclose(step.log_prob, summed / 9, atol=1e-6)
    at_mean = gaussian_log_prob(step.mean, step.mean, step.std)
    far = gaussian_log_prob(step.mean + 3 * step.std, step.mean, step.std)
    assert torch.allclose(at_mean, -torch.log(std) - 0.5 * math.log(2 * math.pi))
    assert torch.allclose(at_mean - far, torch.full((2,), 4.5))  # 3^2 / 2 nats per element
    assert bool((step.log_prob < at_mean).all())


def test_recomputed_log_prob_reproduces_the_rollout_and_follows_v() -> None:
    x = torch.randn(4, 2, 2, 2, generator=_gen(4))
    v = torch.randn_like(x)
    s, s_next = torch.full((4,), 0.9), torch.full((4,), 0.75)
    for kind, level in (("flow", 0.7), ("cps", 0.8)):
        step = sde_step(
            x, s, s_next, v, torch.randn(x.shape, generator=_gen(5)), noise_level=level, kind=kind
        )
        lp, mean = step_log_prob(x, step.next, s, s_next, v, noise_level=level, kind=kind)
        assert torch.equal(lp, step.log_prob) and torch.equal(mean, step.mean)  # on-policy ratio == 1
        moved, _ = step_log_prob(x, step.next, s, s_next, v + 0.3, noise_level=level, kind=kind)
        assert not torch.allclose(moved, step.log_prob)


def test_flow_sde_keeps_the_ode_marginal_of_gaussian_data() -> None:
    """x0 ~ N(0, c^2): the exact velocity is k_t x with k_t = (t - (1-t) c^2) / V_t and the ODE
    marginal at t is N(0, V_t), V_t = (1-t)^2 c^2 + t^2. 20 SDE steps from t = 0.8 to 0.4 with
    a = 0.7 must land on V_0.4 = 0.25: Monte Carlo over 1e5 values (fixed seed; standard error of
    the variance 0.45%, Euler-Maruyama bias +0.8% at this step size) within 3%. Dropping the score
    term of the drift gives 0.45, so the test separates the two.
    """
    c2 = 0.25
    var = lambda t: (1 - t) ** 2 * c2 + t**2  # noqa: E731
    gen = _gen(6)
    grid = torch.linspace(0.8, 0.4, 21)
    x = torch.randn(25_000, 1, 2, 2, generator=gen) * math.sqrt(var(0.8))
    naive = x.clone()
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        k = (t - (1 - t) * c2) / var(t)
        z = torch.randn(x.shape, generator=gen)
        x = sde_step(x, t, t_next, k * x, z, noise_level=0.7).next
        _, std, _ = flow_sde_mean_std(naive, t, t_next, k * naive, 0.7)
        naive = euler_step(naive, t, t_next, k * naive) + std * z  # no score correction
    assert float(x.var()) == pytest.approx(var(0.4), rel=0.03)
    assert abs(float(x.mean())) < 0.01
    assert float(naive.var()) > 1.5 * var(0.4)


def test_cps_preserves_the_coefficients_and_adds_no_noise_at_the_end() -> None:
    x0 = torch.randn(2, 1, 2, 2, generator=_gen(7))
    n = torch.randn_like(x0)
    t, t_next, a = torch.tensor([0.8, 0.3]), torch.tensor([0.5, 0.0]), 0.8
    x = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * n
    mean, std = cps_mean_std(x, t, t_next, n - x0, a)  # exact velocity
    s = t_next * math.sin(a * math.pi / 2)
    assert torch.allclose(std.view(-1), s)
    keep = torch.sqrt(t_next**2 - s**2).view(-1, 1, 1, 1)
    assert torch.allclose(mean, (1 - t_next.view(-1, 1, 1, 1)) * x0 + keep * n, atol=1e-6)
    assert torch.allclose(keep.view(-1) ** 2 + s**2, t_next**2)  # noise variance t'^2 again
    assert torch.allclose(mean[1], x0[1], atol=1e-6) and float(std.view(-1)[1]) == 0.0
    assert torch.allclose(cps_log_prob(mean + 0.5, mean), torch.full((2,), -0.25))


# ------------------------------------------------------------------------------- Flow-GRPO
def test_flow_grpo_loss_hand_computed_on_a_group_of_four() -> None:
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.zeros(4, dtype=torch.long)).values
    sd = math.sqrt(1.25) + 1e-4  # population std + eps
    a, b = 1.5 / sd, 0.5 / sd
    assert adv.tolist() == pytest.approx([-a, -b, b, a], rel=1e-6)
    ratios = torch.tensor([1.3, 0.9, 1.05, 0.7])
    old = torch.randn(4, generator=_gen(8))
    lp = (old + torch.log(ratios)).requires_grad_()
    diff = torch.tensor([0.1, 0.2, 0.0, 0.3]).view(4, 1, 1, 1)
    mean = torch.zeros(4, 1, 1, 2) + diff
    scale = torch.tensor([0.5, 0.5, 1.0, 1.0]).view(4, 1, 1, 1)
    out = flow_grpo_loss(
        lp,
        old,
        adv,
        clip_range=0.2,
        beta_kl=0.5,
        mean=mean,
        ref_mean=torch.zeros_like(mean),
        kl_scale=scale,
    )
    # per sample max(-A rho, -A clip(rho, 0.8, 1.2)): 0 -> unclipped 1.3a; 1, 2 inside the range;
    # 3 -> unclipped -0.7a (the clipped -0.8a is smaller)
    policy = (1.3 * a + 0.9 * b - 1.05 * b - 0.7 * a) / 4
    kl = (0.01 / 0.5 + 0.04 / 0.5 + 0.0 + 0.09 / 2) / 4  # d^2 / (2 s^2)
    assert out.policy == pytest.approx(policy, rel=1e-5)
    assert out.kl == pytest.approx(kl, rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(policy + 0.5 * kl, rel=1e-5)
    assert out.clipfrac == 0.5 and out.clipfrac_gt_one == 0.25 and out.clipfrac_lt_one == 0.25
    assert out.approx_kl == pytest.approx(0.5 * float((torch.log(ratios) ** 2).mean()), rel=1e-5)
    out.loss.backward()
    # d/d log pi of -A rho where the unclipped term is active, 0 where the clip binds
    assert lp.grad.tolist() == pytest.approx(
        [1.3 * a / 4, 0.9 * b / 4, -1.05 * b / 4, -0.7 * a / 4], rel=1e-5
    )


def _one_transition(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = torch.randn(1, 2, 3, 3, generator=_gen(9))
    s, s_next = torch.tensor([0.8]), torch.tensor([0.6])
    step = sde_step(
        x, s, s_next, theta.detach().expand_as(x), torch.randn(x.shape, generator=_gen(10)), noise_level=0.7
    )
    return x, s, s_next, step.next, step.log_prob


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_flow_grpo_step_raises_the_log_prob_of_good_samples_and_lowers_bad(sign: float) -> None:
    theta = torch.nn.Parameter(torch.randn(1, 2, 3, 3, generator=_gen(11)))
    x, s, s_next, x_next, old = _one_transition(theta)
    lp, _ = step_log_prob(x, x_next, s, s_next, theta.expand_as(x), noise_level=0.7)
    out = flow_grpo_loss(lp, old, torch.tensor([sign]), clip_range=1e-4)
    assert out.ratio_mean == 1.0  # on-policy
    out.loss.backward()
    with torch.no_grad():
        theta -= 0.1 * theta.grad
        new, _ = step_log_prob(x, x_next, s, s_next, theta.expand_as(x), noise_level=0.7)
    assert sign * float(new - old) > 1e-4


def test_flow_grpo_clip_stops_the_gradient_outside_the_trust_region() -> None:
    lp = torch.zeros(4, requires_grad=True)
    old = -torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))  # ratios 1.5, 1.5, 0.5, 0.5
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    flow_grpo_loss(lp, old, adv, clip_range=0.2).loss.backward()
    # A > 0 past 1 + eps and A < 0 past 1 - eps are clipped; the other two still pull back
    assert lp.grad.tolist() == pytest.approx([0.0, 1.5 / 4, 0.0, -0.5 / 4])


def test_flow_grpo_kl_pulls_the_mean_to_the_reference_and_checks_its_inputs() -> None:
    mean = torch.tensor([0.4, -0.2]).view(1, 1, 1, 2).requires_grad_()
    lp = torch.zeros(1, requires_grad=True)
    out = flow_grpo_loss(
        lp,
        lp.detach(),
        torch.zeros(1),
        clip_range=1e-4,
        beta_kl=1.0,
        mean=mean,
        ref_mean=torch.zeros_like(mean),
        kl_scale=torch.tensor(0.5),
    )
    out.loss.backward()
    # d/dmu of mean(mu^2) / (2 * 0.25) = 2 mu / 2 / 0.5 = 2 mu
    assert mean.grad.view(-1).tolist() == pytest.approx([0.8, -0.4])
    with pytest.raises(ValueError, match="kl_scale"):
        flow_grpo_loss(lp, lp.detach(), torch.zeros(1), clip_range=1e-4, beta_kl=1.0)
    with pytest.raises(ValueError, match="differ"):
        flow_grpo_loss(lp, torch.zeros(2), torch.zeros(1), clip_range=1e-4)


def test_flow_grpo_loss_over_several_steps_is_the_per_step_average() -> None:
    """(N, T) inputs: one advantage per trajectory broadcast over its T trained steps."""
    g = _gen(18)
    lp, old = torch.randn(3, 2, generator=g) * 0.1, torch.randn(3, 2, generator=g) * 0.1
    adv = torch.tensor([1.0, -0.5, 2.0])
    mean, ref = torch.randn(3, 2, 1, 2, 2, generator=g), torch.randn(3, 2, 1, 2, 2, generator=g)
    scale = torch.rand(3, 2, 1, 1, 1, generator=g) + 0.5
    kw = dict(clip_range=0.05, beta_kl=0.1)
    both = flow_grpo_loss(lp, old, adv, mean=mean, ref_mean=ref, kl_scale=scale, **kw)
    per_step = [
        flow_grpo_loss(
            lp[:, j], old[:, j], adv, mean=mean[:, j], ref_mean=ref[:, j], kl_scale=scale[:, j], **kw
        )
        for j in range(2)
    ]
    assert float(both.loss) == pytest.approx(sum(float(o.loss) for o in per_step) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="kl_scale"):
        flow_grpo_loss(lp, old, adv, mean=mean, ref_mean=ref, kl_scale=torch.ones(2), **kw)


def test_flow_grpo_trained_steps_full_and_fast_window() -> None:
    assert train_steps(10) == list(range(9))  # the last, nearly noise-free step is never trained
    rng = random.Random(0)
    starts = set()
    for _ in range(200):
        steps = train_steps(10, window=3, window_range=(0, 5), rng=rng)
        assert steps == list(range(steps[0], steps[0] + 3)) and steps[-1] < 5
        starts.add(steps[0])
    assert starts == {0, 1, 2}
    with pytest.raises(ValueError, match="does not fit"):
        train_steps(10, window=6, window_range=(0, 5), rng=rng)
    with pytest.raises(ValueError, match="rng"):
        train_steps(10, window=3)
    fast = FLOW_GRPO_SD35M["geneval-fast-nocfg"]
    assert (
        len(
            train_steps(
                fast.rollout_steps, window=fast.sde_window, window_range=fast.sde_window_range, rng=rng
            )
        )
        == 3
    )
    with pytest.raises(ValueError, match="sde"):
        FlowGrpoHParams(sde="ddim")


# ---------------------------------------------------------------------------- DiffusionNFT
def test_nft_optimality_probability_and_old_policy_decay() -> None:
    r = optimality_probability(torch.tensor([-10.0, -5.0, 0.0, 2.5, 5.0]))
    assert r.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.75, 1.0])
    assert [old_policy_decay(s) for s in (0, 100, 2000)] == pytest.approx([0.0, 0.1, 0.5])
    assert [old_policy_decay(s, 2) for s in (50, 75, 175, 1000)] == pytest.approx([0.0, 0.0, 0.75, 0.999])
    with pytest.raises(ValueError, match="decay_type"):
        DiffusionNftHParams(decay_type=3)
    assert DIFFUSIONNFT_SD35M["ocr"].beta == 0.1  # OCR is the only single reward with beta 0.1


def test_nft_loss_and_gradient_hand_computed() -> None:
    x0 = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2)
    noise = torch.full_like(x0, 0.5)
    t = torch.tensor([0.5])
    x_t = 0.5 * x0 + 0.5 * noise  # [0.75, -0.25]
    v = torch.ones_like(x0).requires_grad_()
    out = diffusionnft_loss(
        v,
        torch.zeros_like(x0),
        x_t,
        t,
        x0,
        torch.tensor([0.75]),
        beta=0.5,
        v_ref=torch.zeros_like(x0),
        kl_beta=0.1,
    )
    # v+ = 0.5 -> x0+ = [0.5, -0.5], error [-0.5, 0.5]: L+ = 0.25 / 0.5 = 0.5
    # v- = -0.5 -> x0- = [1.0, 0.0], error [0, 1]:    L- = 0.5 / 0.5 = 1.0
    assert out.positive == pytest.approx(0.5) and out.negative == pytest.approx(1.0)
    assert out.policy == pytest.approx(5 * (0.75 * 0.5 / 0.5 + 0.25 * 1.0 / 0.5))  # 6.25
    assert out.kl == pytest.approx(1.0) and float(out.loss.detach()) == pytest.approx(6.35)
    assert out.old_deviate == pytest.approx(1.0)
    out.loss.backward()
    # dL+/dv = err+ / w+ * (-t beta) = [0.25, -0.25]; dL-/dv = err- / w- * (t beta) = [0, 0.5]
    # 5 (0.75 dL+ + 0.25 dL-) / 0.5 + 0.1 * 2 (v - v_ref) / 2
    assert v.grad.view(-1).tolist() == pytest.approx([1.875 + 0.1, -0.625 + 0.1])


def _nft_setup() -> tuple[torch.Tensor, ...]:
    x0 = torch.randn(2, 2, 3, 3, generator=_gen(12))
    noise = torch.randn(x0.shape, generator=_gen(13))
    t = torch.tensor([0.4, 0.7])
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
    return x0, noise, t, x_t


@pytest.mark.parametrize("r", [1.0, 0.0])
def test_nft_step_pulls_toward_good_samples_and_pushes_from_bad(r: float) -> None:
    x0, noise, t, x_t = _nft_setup()
    target = noise - x0
    theta = torch.nn.Parameter(torch.randn(x0.shape, generator=_gen(14)))
    v_old = theta.detach().clone()  # on-policy: the sampler is the learner
    fm_error = lambda: float(((theta.detach() - target) ** 2).mean())  # noqa: E731
    before = fm_error()
    diffusionnft_loss(theta, v_old, x_t, t, x0, torch.full((2,), r), beta=1.0).loss.backward()
    with torch.no_grad():
        theta -= 0.01 * theta.grad
    # r = 1: the positive policy (= v at beta 1) moves toward the sample's flow-matching target;
    # r = 0: the negative policy does, so v (and v+) moves away from it
    assert (fm_error() < before) if r == 1.0 else (fm_error() > before)


def test_nft_neutral_samples_teach_nothing_on_policy() -> None:
    x0, _, t, x_t = _nft_setup()
    theta = torch.randn(x0.shape, generator=_gen(15)).requires_grad_()
    out = diffusionnft_loss(theta, theta.detach(), x_t, t, x0, torch.full((2,), 0.5), beta=0.1)
    out.loss.backward()
    assert out.loss.item() > 0 and theta.grad.abs().max().item() < 1e-6  # gradient ~ (2r - 1)


# ----------------------------------------------------------------------------------- DGPO
def test_dgpo_loss_hand_computed_value_and_kl() -> None:
    err = torch.tensor([1.0, 2.0], requires_grad=True)
    reg = torch.tensor([0.2, 0.4], requires_grad=True)
    out = dgpo_loss(
        err,
        torch.tensor([1.5, 1.5]),
        err.detach(),
        reg,
        torch.tensor([1.0, -1.0]),
        torch.zeros(2, dtype=torch.long),
        n_groups=1,
        group_size=2,
        beta_dpo=1.0,
        clip_range=1e-2,
        kl_beta=0.5,
    )
    w = 1 / (1 + math.exp(0.5))  # sigmoid(1/2 * ((1 - 1.5) - (2 - 1.5)))
    assert float(out.loss.detach()) == pytest.approx(w * (1.0 - 2.0) / 2 + 0.5 * 0.3, rel=1e-6)
    assert out.group_weight_mean == pytest.approx(w) and not out.drift_clip_active
    out.loss.backward()
    assert err.grad.tolist() == pytest.approx([w / 2, -w / 2]) and reg.grad.tolist() == pytest.approx(
        [0.25, 0.25]
    )


def test_dgpo_step_lowers_the_denoising_error_of_the_better_sample() -> None:
    """A group of 4 with shared noise and noise level; v(x_t) = theta * x_t + b (per element)."""
    x0 = torch.randn(4, 1, 3, 3, generator=_gen(16))
    noise = torch.randn(1, 1, 3, 3, generator=_gen(17)).expand_as(x0)  # shared by the group
    t = 0.7
    x_t = (1 - t) * x0 + t * noise
    target = noise - x0
    theta = torch.nn.Parameter(torch.full((1, 1, 3, 3), 0.5))
    bias = torch.nn.Parameter(torch.zeros(1, 1, 3, 3))
    v_ref = (theta * x_t + bias).detach()
    adv = group_advantages(torch.tensor([0.9, 0.1, 0.5, 0.3]), torch.zeros(4, dtype=torch.long)).values
    err, err_ref, err_old, reg = denoising_errors(target, theta * x_t + bias, v_ref, v_ref)
    assert torch.allclose(err, err_ref) and float(reg.detach().sum()) == 0.0
    out = dgpo_loss(
        err,
        err_ref,
        err_old,
        reg,
        adv,
        torch.zeros(4, dtype=torch.long),
        n_groups=1,
        group_size=4,
        beta_dpo=100.0,
        clip_range=1e-2,
        kl_beta=0.02,
    )
    assert out.group_weight_mean == pytest.approx(0.5)  # at the reference, w_g = sigmoid(0)
    out.loss.backward()
    with torch.no_grad():
        for p in (theta, bias):
            p -= 0.5 * p.grad
        after = ((target - (theta * x_t + bias)) ** 2).flatten(1).mean(1)
    before, best, worst = err.detach(), int(adv.argmax()), int(adv.argmin())
    assert float(after[best]) < float(before[best])  # the highest-advantage sample's error goes down
    assert float(after[worst]) > float(before[worst])  # the lowest's goes up
    assert float((adv * (after - before)).sum()) < 0  # the group preference improves


def test_dgpo_timestep_draw_ema_decay_and_presets() -> None:
    rng = random.Random(0)
    picks = train_step_indices(6, 4, rng)
    assert len(set(picks)) == 4 and all(0 <= j <= 6 for j in picks)
    with pytest.raises(ValueError, match="distinct"):
        train_step_indices(2, 4, rng)
    assert [ema_ref_decay(s) for s in (0, 100, 1000)] == pytest.approx([0.0, 0.1, 0.3])
    geneval = DGPO_SD35M["geneval"]
    assert len(train_step_indices(geneval.trunc_steps, geneval.num_train_timesteps, rng)) == 4
    with pytest.raises(ValueError, match="num_train_timesteps"):
        DgpoHParams(num_train_timesteps=8, trunc_steps=4)
