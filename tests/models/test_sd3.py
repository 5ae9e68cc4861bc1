"""SD3 adapter on tiny random models: fidelity to StableDiffusion3Pipeline, conventions, LoRA roles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from tdm_r1.errors import ConfigError, ShapeError
from tdm_r1.models.sampling import sample
from tdm_r1.models.sd3 import SD3Adapter
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.schedule import flow_schedule
from tdm_r1.testing.lora_roles import add_random_role
from tdm_r1.testing.tiny import tiny_sd3_pipeline

H = W = 32
PROMPTS = ["a red cube on a blue sphere", "the word STOP on a sign"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd3_pipeline(with_t5=True)


@pytest.fixture(scope="module")
def adapter(pipe) -> SD3Adapter:
    return SD3Adapter.from_pipeline(
        pipe, sampling=SamplingSpec(steps=4, height=H, width=W), device="cpu", max_sequence_length=16
    )


def _scheduler(solver: str):
    if solver == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=3.0)
    return DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction", solver_order=2
    )


@pytest.mark.parametrize(
    ("solver", "guidance"), [("euler", 1.0), ("euler", 4.5), ("dpmsolver++", 1.0), ("dpmsolver++", 2.0)]
)
def test_reproduces_diffusers_pipeline(pipe, adapter: SD3Adapter, solver: str, guidance: float) -> None:
    noise = adapter.initial_noise([11, 12], H, W)
    pipe.scheduler = _scheduler(solver)
    ref = pipe(
        list(PROMPTS),
        height=H,
        width=W,
        num_inference_steps=4,
        guidance_scale=guidance,
        latents=noise.clone(),
        output_type="pt",
        max_sequence_length=16,
    ).images
    cond = adapter.encode_prompts(PROMPTS)
    uncond = adapter.null_conditioning(2) if guidance != 1.0 else None
    traj = sample(
        adapter, cond, noise, flow_schedule(4, shift=3.0, solver=solver), guidance=guidance, uncond=uncond
    )
    assert traj.nfe == (8 if guidance != 1.0 else 4)
    assert torch.allclose(adapter.decode(traj.final), ref, atol=1e-4)


def test_missing_t5_is_zeros_like_diffusers() -> None:
    pipe = tiny_sd3_pipeline(with_t5=False, seed=3)
    ad = SD3Adapter.from_pipeline(pipe, sampling=SamplingSpec(steps=3, height=H, width=W), device="cpu")
    noise = ad.initial_noise([5], H, W)
    ref = pipe(
        ["a cat"],
        height=H,
        width=W,
        num_inference_steps=3,
        guidance_scale=3.0,
        latents=noise.clone(),
        output_type="latent",
        max_sequence_length=128,  # the SD3 family's T5 length (TDM-R1's); the pipeline's default is 256
    ).images
    cond = ad.encode_prompts(["a cat"])
    assert cond.embeds.shape == (1, 77 + 128, 32) and torch.count_nonzero(cond.embeds[:, 77:]) == 0
    traj = sample(ad, cond, noise, flow_schedule(3, shift=3.0), guidance=3.0, uncond=ad.null_conditioning(1))
    assert torch.allclose(traj.final, ref, atol=1e-5)


def test_velocity_is_the_raw_output_at_timestep_1000_sigma(pipe, adapter: SD3Adapter) -> None:
    x = torch.randn(2, 4, H // 2, W // 2, generator=torch.Generator().manual_seed(0))
    cond = adapter.encode_prompts(PROMPTS)
    sigma = torch.tensor([0.9, 0.3])
    raw = pipe.transformer(
        hidden_states=x,
        timestep=sigma * 1000,
        encoder_hidden_states=cond.embeds,
        pooled_projections=cond.pooled,
        return_dict=False,
    )[0]
    assert torch.equal(adapter.velocity(x, sigma, cond), raw)
    assert torch.equal(
        adapter.velocity(x[:1], 0.9, cond[0]), adapter.velocity(x[:1], torch.tensor([0.9]), cond[0])
    )


def test_prompt_cache(adapter: SD3Adapter) -> None:
    adapter.clear_prompt_cache()
    cache = adapter.prompt_cache
    hits, misses = cache.hits, cache.misses
    a = adapter.encode_prompts(["x y", "z", "x y"])
    assert cache.misses - misses == 2 and cache.hits - hits == 1
    b = adapter.encode_prompts(["z", "x y"])
    assert cache.hits - hits == 3 and cache.misses - misses == 2
    assert torch.equal(a.embeds[1], b.embeds[0]) and torch.equal(a.embeds[0], a.embeds[2])


def test_generate_is_batch_invariant_and_subset_reproducible(adapter: SD3Adapter) -> None:
    prompts = ["a", "b c", "d e f", "a"]
    seeds = [7, 8, 9, 10]
    full = adapter.generate(prompts, seeds, batch_size=4, progress=False)
    assert full.shape == (4, 3, H, W) and full.min() >= 0 and full.max() <= 1
    alone = adapter.generate(prompts[2:3], seeds[2:3], progress=False)
    pairs = adapter.generate(prompts[1:], seeds[1:], batch_size=2, progress=False)
    assert torch.allclose(alone[0], full[2], atol=1e-5)
    assert torch.allclose(pairs, full[1:], atol=1e-5)
    assert not torch.allclose(full[0], full[3], atol=1e-3)  # same prompt, different seed


def test_decode_and_encode_images_round_trip_shapes(adapter: SD3Adapter) -> None:
    images = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    z = adapter.encode_images(images)
    assert z.shape == (2, *adapter.latent_shape(H, W)) and z.dtype == torch.float32
    out = adapter.decode(z)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ShapeError, match="multiples of 4"):
        adapter.latent_shape(30, 32)


# ------------------------------------------------------------------------------------------- roles
@pytest.fixture
def roles_adapter() -> SD3Adapter:
    ad = SD3Adapter.from_pipeline(
        tiny_sd3_pipeline(seed=5), sampling=SamplingSpec(steps=2, height=H, width=W), device="cpu"
    )
    return ad


def _probe(ad: SD3Adapter):
    x = torch.randn(2, 4, H // 2, W // 2, generator=torch.Generator().manual_seed(4))
    return x, torch.tensor([0.8, 0.4]), ad.encode_prompts(PROMPTS)


def test_roles_switch_outputs_and_stay_independent(roles_adapter: SD3Adapter) -> None:
    ad = roles_adapter
    x, s, cond = _probe(ad)
    base = ad.velocity(x, s, cond)
    add_random_role(ad, "generator", rank=4, alpha=8)
    ad.add_role("fake", rank=4, alpha=8, init="gaussian")
    add_random_role(ad, "surrogate", rank=2, alpha=2)
    assert list(ad.roles) == ["generator", "fake", "surrogate"]
    gen, fake, sur = (ad.velocity(x, s, cond, role=r) for r in ("generator", "fake", "surrogate"))
    assert torch.allclose(ad.velocity(x, s, cond), base, atol=1e-6)  # role None = adapters off
    assert torch.allclose(fake, base, atol=1e-6)  # gaussian init: B = 0
    assert not torch.allclose(gen, base, atol=1e-4) and not torch.allclose(sur, base, atol=1e-4)
    with torch.no_grad():
        for p in ad.role_parameters("fake"):
            p.add_(0.05)
    assert not torch.allclose(ad.velocity(x, s, cond, role="fake"), base, atol=1e-4)
    assert torch.equal(ad.velocity(x, s, cond, role="generator"), gen)  # untouched by fake's change
    with ad.use_role("surrogate"):
        assert ad.roles.active == "surrogate"
    assert ad.roles.active is None
    with pytest.raises(ConfigError, match="unknown LoRA role 'critic'"):
        ad.velocity(x, s, cond, role="critic")
    with pytest.raises(ConfigError, match="already exists"):
        ad.add_role("fake")


def test_targets_are_the_8_projections_not_attn2(roles_adapter: SD3Adapter) -> None:
    ad = roles_adapter
    ad.add_role("generator", rank=4, alpha=8)
    names = ad.roles.tensor_names("generator")
    assert not any(".attn2." in n for n in names)
    # 2 blocks x 8 projections, except the last block (context_pre_only: no to_add_out), x (A, B)
    assert len(names) == (8 + 7) * 2
    assert names[0].endswith("transformer_blocks.0.attn.to_q.lora_A.generator.weight")


def test_gradients_reach_only_the_active_role(roles_adapter: SD3Adapter) -> None:
    ad = roles_adapter
    for r in ("generator", "fake"):
        add_random_role(ad, r, rank=4, alpha=8)
    x, s, cond = _probe(ad)
    with ad.use_role("fake"):
        pass  # switching must not freeze the other roles
    v = ad.velocity(x, s, cond, role="generator")
    with torch.no_grad():
        ad.velocity(x, s, cond, role=None)  # a teacher query in between must not break the graph
    v.square().mean().backward()
    for name, p in zip(ad.roles.tensor_names("generator"), ad.role_parameters("generator"), strict=True):
        if "transformer_blocks.1.attn.add_q_proj" in name:
            continue  # the last block's text queries are discarded (context_pre_only): no gradient
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in ad.role_parameters("fake"))
    assert all(p.grad is None for n, p in ad.transformer.named_parameters() if ".lora_" not in n)
    assert all(p.dtype == torch.float32 for p in ad.role_parameters("generator"))


def test_save_and_load_role_round_trip(roles_adapter: SD3Adapter, tmp_path: Path) -> None:
    ad = roles_adapter
    add_random_role(ad, "generator", rank=4, alpha=8)
    x, s, cond = _probe(ad)
    ref = ad.velocity(x, s, cond, role="generator")
    folder = ad.save_role("generator", tmp_path / "lora")
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    other = SD3Adapter.from_pipeline(
        tiny_sd3_pipeline(seed=5), sampling=SamplingSpec(steps=2, height=H, width=W), device="cpu"
    )
    other.roles.load("generator", folder)  # creates the role from adapter_config.json
    assert torch.allclose(other.velocity(x, s, cond, role="generator"), ref, atol=1e-6)
    assert other.roles.digest("generator") == ad.roles.digest("generator")
    other.add_role("small", rank=2, alpha=2)
    with pytest.raises(ShapeError, match="shape mismatch"):
        other.roles.load("small", folder)


def test_load_tdm_ema_and_clear_errors(roles_adapter: SD3Adapter, tmp_path: Path) -> None:
    ad = roles_adapter
    add_random_role(ad, "generator", rank=4, alpha=8)
    x, s, cond = _probe(ad)
    ref = ad.velocity(x, s, cond, role="generator")
    ckpt = tmp_path / "ema.ckpt"
    torch.save({"decay": 0.9, "ema_parameters": ad.get_role_state("generator")}, ckpt)

    fresh = SD3Adapter.from_pipeline(
        tiny_sd3_pipeline(seed=5), sampling=SamplingSpec(steps=2, height=H, width=W), device="cpu"
    )
    fresh.add_role("generator", rank=4, alpha=8)
    fresh.roles.load_tdm_ema("generator", ckpt)
    assert torch.allclose(fresh.velocity(x, s, cond, role="generator"), ref, atol=1e-6)

    fresh.add_role("narrow", rank=4, alpha=8, target_modules=["attn.to_q", "attn.to_k"])
    with pytest.raises(ShapeError, match=r"has 30 tensors but role 'narrow'.*has 8 LoRA tensors"):
        fresh.roles.load_tdm_ema("narrow", ckpt)
    fresh.add_role("wide", rank=8, alpha=16)
    before = [p.clone() for p in fresh.role_parameters("wide")]
    with pytest.raises(ShapeError, match=r"tensor 0 has shape \(4, 16\).*\(8, 16\); nothing was loaded"):
        fresh.roles.load_tdm_ema("wide", ckpt)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.role_parameters("wide"), strict=True))
    torch.save({"state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(ShapeError, match="not a TDM EMA checkpoint"):
        fresh.roles.load_tdm_ema("wide", tmp_path / "bad.ckpt")


def test_set_role_weights_for_ema_copies(roles_adapter: SD3Adapter) -> None:
    ad = roles_adapter
    add_random_role(ad, "generator", rank=4, alpha=8)
    snapshot = ad.get_role_state("generator")
    digest = ad.roles.digest("generator")
    with torch.no_grad():
        for p in ad.role_parameters("generator"):
            p.mul_(2)
    assert ad.roles.digest("generator") != digest
    ad.set_role_weights("generator", snapshot)
    assert ad.roles.digest("generator") == digest
    assert ad.config_dict()["role"] == "generator" and ad.config_dict()["role_digest"] == digest


def test_the_adapter_offers_what_sampler_runner_and_trainer_need(adapter: SD3Adapter) -> None:
    import inspect

    from tdm_r1.models import protocols

    for proto in (protocols.VelocityModel, protocols.ImageGenerator, protocols.TrainableFlowModel):
        assert isinstance(adapter, proto), proto.__name__
        for name, fn in vars(proto).items():
            if callable(fn) and not name.startswith("_"):
                wanted = inspect.signature(fn).parameters
                offered = inspect.signature(getattr(SD3Adapter, name)).parameters
                assert set(wanted) - {"kwargs"} <= set(offered), f"{proto.__name__}.{name}"
    assert not isinstance(object(), protocols.VelocityModel)
