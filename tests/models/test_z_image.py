"""Z-Image adapter on a tiny random model: fidelity to ZImagePipeline, its conventions, LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tdm_r1.models.sampling import sample
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.models.z_image import ZImageAdapter
from tdm_r1.schedule import flow_schedule
from tdm_r1.testing.lora_roles import add_random_role
from tdm_r1.testing.tiny import tiny_z_image_pipeline

H = W = 32
PROMPTS = ["a red cube", "two green cats and three yellow dogs next to a white car"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_z_image_pipeline()


@pytest.fixture(scope="module")
def adapter(pipe) -> ZImageAdapter:
    return ZImageAdapter.from_pipeline(pipe, sampling=SamplingSpec(steps=5, height=H, width=W), device="cpu")


def test_turbo_schedule_reproduces_pipeline_with_4_passes(pipe, adapter: ZImageAdapter) -> None:
    """5 scheduled steps with the sigma_min=0 spacing = 4 transformer passes (TDM-R1's Z-Image sampling)."""
    noise = adapter.initial_noise([3, 4], H, W)
    ref = pipe(
        list(PROMPTS),  # the pipeline rewrites its prompt list in place (chat template)
        height=H,
        width=W,
        num_inference_steps=5,
        sigmas=torch.linspace(1, 0, 5).tolist(),  # what diffusers <= 0.36 used (scheduler.sigma_min = 0)
        guidance_scale=0.0,
        latents=noise.clone(),
        output_type="pt",
    ).images
    traj = sample(
        adapter, adapter.encode_prompts(PROMPTS), noise, flow_schedule(5, shift=3.0, spacing="zero-terminal")
    )
    assert traj.nfe == 4
    assert torch.allclose(adapter.decode(traj.final), ref, atol=1e-4)


def test_cfg_and_renorm_reproduce_pipeline(pipe, adapter: ZImageAdapter) -> None:
    noise = adapter.initial_noise([5, 6], H, W)
    ref = pipe(
        list(PROMPTS),
        height=H,
        width=W,
        num_inference_steps=3,
        guidance_scale=2.0,  # diffusers' pos + 2 (pos - neg) = tdmbench guidance 3
        cfg_normalization=True,
        latents=noise.clone(),
        output_type="latent",
    ).images
    traj = sample(
        adapter,
        adapter.encode_prompts(PROMPTS),
        noise,
        flow_schedule(3, shift=3.0, spacing="z-image"),
        guidance=3.0,
        uncond=adapter.null_conditioning(2),
        cfg_renorm=1.0,
    )
    assert traj.nfe == 6
    assert torch.allclose(traj.final, ref, atol=1e-4)


def test_velocity_negates_the_list_output_at_t_one_minus_sigma(pipe, adapter: ZImageAdapter) -> None:
    x = torch.randn(2, 16, H // 2, W // 2, generator=torch.Generator().manual_seed(0))
    cond = adapter.encode_prompts(PROMPTS)
    assert cond.mask is not None and cond.mask.sum(1).tolist() == [len(r) for r in cond.rows()]
    assert cond.rows()[0].shape[0] < cond.rows()[1].shape[0]  # only real tokens are kept
    sigma = torch.tensor([0.75, 0.25])
    raw = pipe.transformer(list(x.unsqueeze(2).unbind(0)), 1 - sigma, cond.rows(), return_dict=False)[0]
    v = adapter.velocity(x, sigma, cond)
    assert torch.allclose(v, -torch.stack(raw).squeeze(2), atol=1e-6)


def test_encoding_equals_pipeline_padding_to_512(pipe, adapter: ZImageAdapter) -> None:
    ours = adapter.encode_prompts(PROMPTS).rows()
    ref = pipe.encode_prompt(list(PROMPTS), device="cpu", do_classifier_free_guidance=False)[0]
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_lora_roles_on_z_image(adapter: ZImageAdapter, tmp_path: Path) -> None:
    ad = ZImageAdapter.from_pipeline(
        tiny_z_image_pipeline(seed=1), sampling=SamplingSpec(steps=5, height=H, width=W), device="cpu"
    )
    add_random_role(ad, "generator", rank=4, alpha=8)
    names = ad.roles.tensor_names("generator")
    # noise refiner, context refiner (1 each) and 2 main layers; 4 projections; A and B
    assert len(names) == 4 * 4 * 2 and all(".attention." in n for n in names)
    x = torch.randn(1, 16, H // 2, W // 2)
    cond = ad.encode_prompts(["a cat"])
    base, gen = ad.velocity(x, 0.5, cond), ad.velocity(x, 0.5, cond, role="generator")
    assert not torch.allclose(base, gen, atol=1e-5)
    ckpt = tmp_path / "tdmr1_zimage_ema.ckpt"
    torch.save({"ema_parameters": ad.get_role_state("generator")}, ckpt)
    other = ZImageAdapter.from_pipeline(
        tiny_z_image_pipeline(seed=1), sampling=SamplingSpec(steps=5, height=H, width=W), device="cpu"
    )
    # TDM-R1's README target list, including add_k_proj / add_v_proj that Z-Image does not have
    other.add_role(
        "generator",
        rank=4,
        alpha=8,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"],
    )
    other.roles.load_tdm_ema("generator", ckpt)
    assert torch.allclose(other.velocity(x, 0.5, cond, role="generator"), gen, atol=1e-6)
    images = other.generate(["a cat"], [1], progress=False)
    assert images.shape == (1, 3, H, W)
