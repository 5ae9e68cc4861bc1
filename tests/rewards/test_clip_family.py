"""pickscore, clipscore, aesthetic on tiny random transformers CLIPs saved in the real formats."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdm_r1.errors import ConfigError, ShapeError
from tdm_r1.images import to_pil
from tdm_r1.registry import REWARDS
from tdm_r1.rewards import build_reward
from tdm_r1.rewards.preprocess import ImagePreprocess
from tdm_r1.testing import random_weights as rw
from tdm_r1.testing.reward_checks import (
    PROMPTS,
    assert_fast_missing_weights,
    smooth_images,
    use_empty_hf_cache,
)
from tdm_r1.toyworld.clip_tokenizer import clip_tokenizer, clip_vocab_path


@pytest.fixture(autouse=True)
def _random_aesthetic_mlps_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test MLPs are random, so their sha256 is not the published file's (see test_weights_integrity)."""
    monkeypatch.setenv("TDMBENCH_ALLOW_UNPINNED_WEIGHTS", "1")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rw.write_hf_clip(tmp_path_factory.mktemp("tiny-clip"), "tiny", seed=1)


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rw.write_aesthetic_mlp(
        tmp_path_factory.mktemp("mlp") / "sac+logos+ava1-l14-linearMSE.pth", 16, seed=2
    )


def reference_clip(clip_dir: Path) -> tuple[torch.nn.Module, object]:
    from transformers import CLIPModel, CLIPProcessor

    return CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)


def reference_embeds(
    model, processor, pixels: torch.Tensor, prompts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image / text embeddings computed directly from the model's towers."""
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tok = processor.tokenizer(
            prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        )
        txt = model.text_projection(model.text_model(**tok).pooler_output)
    return img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------- plumbing
def test_clip_tokenizer_is_the_real_clip_vocabulary() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tok = clip_tokenizer()
    assert len(tok) == 49408
    reference = SimpleTokenizer(str(clip_vocab_path()))
    for text in [
        "a photo of a cat",
        'A sign that says "OPEN 24 hours"!',
        "émoji, numbers 1234 and CamelCase",
    ]:
        ids = tok(text).input_ids
        assert ids[0] == 49406 and ids[-1] == 49407
        assert ids[1:-1] == reference.encode(text)
    with gzip.open(clip_vocab_path()) as f:
        assert f.readline().startswith(b'"bpe_simple_vocab_16e6.txt')


@pytest.mark.parametrize(("h", "w"), [(64, 64), (48, 40), (32, 32)])
def test_preprocess_matches_the_hf_processor_within_one_uint8_step(h: int, w: int) -> None:
    from transformers import CLIPImageProcessor

    hf = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    images = smooth_images(3, h, w)
    ours = ImagePreprocess.from_hf(hf)(images)
    theirs = hf(images=to_pil(images), return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (3, 3, 32, 32)
    std = torch.tensor(hf.image_std).view(1, 3, 1, 1)
    diff_01 = ((ours - theirs) * std).abs()  # back in [0,1] pixel units
    assert diff_01.max() <= 1.5 / 255
    assert diff_01.mean() <= 0.5 / 255
    if (h, w) == (32, 32):  # no resize: identical
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_preprocess_rejects_settings_it_does_not_reproduce() -> None:
    from transformers import CLIPImageProcessor

    with pytest.raises(ConfigError, match="bicubic"):
        ImagePreprocess.from_hf(CLIPImageProcessor(resample=2))
    with pytest.raises(ConfigError, match="do_center_crop"):
        ImagePreprocess.from_hf(CLIPImageProcessor(do_center_crop=False))


def test_importing_rewards_does_not_import_model_libraries() -> None:
    code = (
        "import sys, tdm_r1.rewards; from tdm_r1.registry import REWARDS; REWARDS.names(); "
        "bad = [m for m in ('open_clip', 'transformers', 'accelerate', 'timm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reward_metadata_and_weight_manifest() -> None:
    from tdm_r1.apps import listing

    for name in ("pickscore", "clipscore", "aesthetic"):
        cls = REWARDS.get(name)
        assert cls.name == name and cls.version and cls.higher_is_better is True and cls.scale
        for wf in cls.weight_files:
            assert wf.env.startswith("TDMBENCH_") and wf.option.startswith(f"--reward-option {name}.")
    table = listing.render("weights")
    for key in (
        "pickscore.model",
        "pickscore.processor",
        "clipscore.model",
        "aesthetic.clip",
        "aesthetic.mlp",
    ):
        assert key in table
    assert "camenduru/improved-aesthetic-predictor" in table


# ----------------------------------------------------------------------------- pickscore
def test_pickscore_is_logit_scale_times_cosine(clip_dir: Path) -> None:
    images = smooth_images(4)
    reward = REWARDS.get("pickscore")(model_path=clip_dir, processor_path=clip_dir)
    out = reward(images=images, prompts=PROMPTS)
    assert out.scores.shape == (4,) and out.scores.dtype == torch.float32

    model, processor = reference_clip(clip_dir)
    img, txt = reference_embeds(model, processor, reward.clip.preprocess(images), PROMPTS)
    cosine = (img * txt).sum(-1)
    expected = model.logit_scale.exp().item() * cosine
    assert abs(model.logit_scale.exp().item() - 1 / 0.07) < 1e-3  # CLIP's init value, not 1
    torch.testing.assert_close(out.scores, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.details["cosine"], cosine, atol=1e-5, rtol=1e-5)


def test_pickscore_flowgrpo_scale_divides_by_26_under_its_own_version(clip_dir: Path) -> None:
    images = smooth_images(2)
    raw = REWARDS.get("pickscore")(model_path=clip_dir, processor_path=clip_dir)
    div = REWARDS.get("pickscore")(model_path=clip_dir, processor_path=clip_dir, flowgrpo_scale=True)
    r, d = raw(images=images, prompts=PROMPTS[:2]), div(images=images, prompts=PROMPTS[:2])
    torch.testing.assert_close(d.scores, r.scores / 26)
    assert raw.id == "pickscore@1" and div.id != raw.id and "26" in div.scale


def test_pickscore_batching_does_not_change_scores(clip_dir: Path) -> None:
    images = smooth_images(4, seed=3)
    batched = REWARDS.get("pickscore")(model_path=clip_dir, processor_path=clip_dir, batch_size=4)
    single = REWARDS.get("pickscore")(model_path=clip_dir, processor_path=clip_dir, batch_size=1)
    one_by_one = torch.cat(
        [single(images=images[i : i + 1], prompts=PROMPTS[i : i + 1]).scores for i in range(4)]
    )
    torch.testing.assert_close(
        batched(images=images, prompts=PROMPTS).scores, one_by_one, atol=1e-4, rtol=1e-5
    )


def test_pickscore_env_var_paths_and_build_reward_options(
    clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TDMBENCH_PICKSCORE_MODEL", str(clip_dir))
    monkeypatch.setenv("TDMBENCH_PICKSCORE_PROCESSOR", str(clip_dir))
    images = smooth_images(2)
    from_env = REWARDS.get("pickscore")()(images=images, prompts=PROMPTS[:2]).scores
    built = build_reward(
        "pickscore", options={"pickscore": {"model_path": str(clip_dir), "flowgrpo_scale": True}}
    )(images=images, prompts=PROMPTS[:2]).scores
    torch.testing.assert_close(built, from_env / 26)


def test_pickscore_offline_without_weights_fails_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_empty_hf_cache(monkeypatch, tmp_path)
    monkeypatch.delenv("TDMBENCH_PICKSCORE_MODEL", raising=False)
    assert_fast_missing_weights(
        REWARDS.get("pickscore"),
        "yuvalkirstain/PickScore_v1",
        "TDMBENCH_PICKSCORE_MODEL",
        "pickscore.model_path",
    )


def test_a_wrong_local_path_is_reported(tmp_path: Path) -> None:
    assert_fast_missing_weights(
        lambda: REWARDS.get("pickscore")(model_path=tmp_path / "nope"),
        "does not exist",
        "pickscore.model_path",
    )


# ----------------------------------------------------------------------------- clipscore
def test_clipscore_is_the_plain_cosine_and_the_paper_variant(clip_dir: Path) -> None:
    images = smooth_images(4, seed=4)
    reward = REWARDS.get("clipscore")(model_path=clip_dir)
    out = reward(images=images, prompts=PROMPTS)
    model, processor = reference_clip(clip_dir)
    img, txt = reference_embeds(model, processor, reward.clip.preprocess(images), PROMPTS)
    cosine = (img * txt).sum(-1)
    torch.testing.assert_close(out.scores, cosine, atol=1e-5, rtol=1e-5)
    assert "ViT-L/14" in reward.scale and "cosine" in reward.scale

    paper = REWARDS.get("clip-score")(model_path=clip_dir, w=2.5)
    torch.testing.assert_close(
        paper(images=images, prompts=PROMPTS).scores, 2.5 * cosine.clamp(min=0), atol=1e-5, rtol=0
    )
    assert paper.id != reward.id
    with pytest.raises(ConfigError, match="w must be > 0"):
        REWARDS.get("clipscore")(model_path=clip_dir, w=0)


def test_clipscore_offline_without_weights_fails_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_empty_hf_cache(monkeypatch, tmp_path)
    assert_fast_missing_weights(
        REWARDS.get("clipscore"), "openai/clip-vit-large-patch14", "TDMBENCH_CLIPSCORE_MODEL"
    )


# ----------------------------------------------------------------------------- aesthetic
def test_aesthetic_is_the_mlp_on_normalised_image_embeddings(clip_dir: Path, mlp_file: Path) -> None:
    images = smooth_images(4, seed=5)
    reward = REWARDS.get("aesthetic")(clip_path=clip_dir, mlp_path=mlp_file)
    out = reward(images=images, prompts=PROMPTS)
    model, _ = reference_clip(clip_dir)
    with torch.no_grad():
        emb = model.visual_projection(
            model.vision_model(pixel_values=reward.clip.preprocess(images)).pooler_output
        )
        emb = emb / emb.norm(dim=-1, keepdim=True)
        state = torch.load(mlp_file, weights_only=True)
        # the published head: five affine layers, dropouts inactive at inference
        x = emb
        for i in (0, 2, 4, 6, 7):
            x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    torch.testing.assert_close(out.scores, x.squeeze(-1), atol=1e-5, rtol=1e-5)
    assert out.scores.std() > 0  # the fixture head is not constant


def test_aesthetic_batching_and_wrong_mlp_file(clip_dir: Path, mlp_file: Path, tmp_path: Path) -> None:
    images = smooth_images(4, seed=6)
    a = REWARDS.get("aesthetic")(clip_path=clip_dir, mlp_path=mlp_file, batch_size=4)
    b = REWARDS.get("aesthetic")(clip_path=clip_dir, mlp_path=mlp_file, batch_size=1)
    torch.testing.assert_close(
        a(images=images, prompts=PROMPTS).scores, b(images=images, prompts=PROMPTS).scores
    )

    state = torch.load(mlp_file, weights_only=True)
    state["layers.1.weight"] = state.pop("layers.2.weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        ShapeError, match=r"missing keys \['layers.2.weight'\].*unexpected keys \['layers.1.weight'\]"
    ):
        REWARDS.get("aesthetic")(clip_path=clip_dir, mlp_path=tmp_path / "bad.pth")
    wide = rw.write_aesthetic_mlp(tmp_path / "wide.pth", 768)
    with pytest.raises(ShapeError, match="768-d embeddings"):
        REWARDS.get("aesthetic")(clip_path=clip_dir, mlp_path=wide)


def test_aesthetic_offline_without_weights_names_the_mlp_file(
    clip_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_empty_hf_cache(monkeypatch, tmp_path)
    assert_fast_missing_weights(
        lambda: REWARDS.get("aesthetic")(clip_path=clip_dir),
        "camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth",
        "TDMBENCH_AESTHETIC_MLP",
        "aesthetic.mlp_path",
    )


def test_rewards_survive_pickling(clip_dir: Path, mlp_file: Path) -> None:
    import pickle

    images = smooth_images(2, seed=14)
    for reward in (
        REWARDS.get("pickscore")(model_path=clip_dir, processor_path=clip_dir),
        REWARDS.get("aesthetic")(clip_path=clip_dir, mlp_path=mlp_file),
    ):
        clone = pickle.loads(pickle.dumps(reward))
        torch.testing.assert_close(
            clone(images=images, prompts=PROMPTS[:2]).scores,
            reward(images=images, prompts=PROMPTS[:2]).scores,
        )
