"""hpsv2.1 on a tiny open_clip architecture saved in the HPSv2 checkpoint format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tdm_r1.errors import ConfigError, ShapeError
from tdm_r1.images import to_pil
from tdm_r1.registry import REWARDS
from tdm_r1.rewards import build_reward
from tdm_r1.rewards.preprocess import CLIP_MEAN, CLIP_STD, LetterboxPreprocess
from tdm_r1.testing import random_weights as rw
from tdm_r1.testing.reward_checks import (
    PROMPTS,
    assert_fast_missing_weights,
    smooth_images,
    use_empty_hf_cache,
)

pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    return rw.register_tiny_open_clip(tmp_path_factory.mktemp("open-clip-configs"))


@pytest.fixture(scope="module")
def ckpt(arch: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rw.write_hps_checkpoint(tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt", arch, seed=7)


def pil_letterbox(image: torch.Tensor, size: int) -> torch.Tensor:
    """Independent reading of HPSv2's ``preprocess_val`` spec on one (3,H,W) [0,1] image, with
    PIL and numpy: uint8 -> PIL bicubic resize of the longer side to ``size`` (new side =
    ``round(side * size / longer)``) -> black canvas, the resized image at offset (pad // 2)
    -> /255 -> OpenAI CLIP mean/std -> (3,size,size)."""
    from PIL import Image

    arr = (image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    h, w = arr.shape[:2]
    scale = size / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    resized = np.asarray(Image.fromarray(arr).resize((nw, nh), Image.Resampling.BICUBIC))
    canvas = np.zeros((size, size, 3), dtype=np.float64)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized / 255.0
    out = (canvas - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    return torch.from_numpy(out).permute(2, 0, 1).float()


@pytest.mark.parametrize(("h", "w"), [(200, 400), (300, 150), (101, 300)])
def test_letterbox_matches_an_independent_pil_implementation(h: int, w: int) -> None:
    images = smooth_images(2, h, w, seed=h)
    got = LetterboxPreprocess(size=224)(images)
    want = torch.stack([pil_letterbox(im, 224) for im in images])
    assert got.shape == want.shape == (2, 3, 224, 224)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    diff = ((got - want) * std).abs()  # back in [0,1] pixel units
    # Padding geometry is exact: every pixel of the black border is exactly black in both.
    black = torch.tensor([-m / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)]).view(1, 3, 1, 1)
    border = (want - black).abs().amax(dim=1) < 1e-6  # (2,224,224)
    assert bool(border.any())
    torch.testing.assert_close(
        got.masked_select(border.unsqueeze(1)), want.masked_select(border.unsqueeze(1))
    )
    # Inside, torch's antialiased bicubic in float vs PIL's bicubic rounded to uint8: ~1 uint8 step.
    assert float(diff.max()) < 2 / 255 and float(diff.mean()) < 0.5 / 255


def test_letterbox_of_a_2_to_1_image_is_not_a_centre_crop() -> None:
    """A 2:1 image keeps all its content in a 224x112 band with black above and below."""
    image = torch.zeros(1, 3, 100, 200)
    image[..., :, :10] = 1.0  # a white stripe at the left edge: a centre crop would cut it off
    x = LetterboxPreprocess(size=224)(image) * torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x = x + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)  # back to [0,1]
    assert torch.allclose(x[..., :56, :], torch.zeros(()), atol=1e-6)  # top pad: 56 rows
    assert torch.allclose(x[..., 168:, :], torch.zeros(()), atol=1e-6)  # bottom pad: 56 rows
    assert float(x[..., 60:160, 2].min()) > 0.95  # the stripe survives at the left edge


def reference_model(arch: str, ckpt: Path) -> tuple[torch.nn.Module, object]:
    """HPSv2's own recipe: create_model_and_transforms + strict load of checkpoint['state_dict']."""
    import open_clip

    model, _, preprocess_val = open_clip.create_model_and_transforms(arch, pretrained=None, output_dict=True)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    return model.eval(), preprocess_val


def test_hps_is_the_cosine_of_normalised_features(arch: str, ckpt: Path) -> None:
    import open_clip

    images = smooth_images(4, 48, 40, seed=8)
    reward = REWARDS.get("hpsv2.1")(checkpoint_path=ckpt, arch=arch)
    out = reward(images=images, prompts=PROMPTS)
    assert out.scores.shape == (4,) and out.scores.dtype == torch.float32

    model, preprocess_val = reference_model(arch, ckpt)
    tokens = open_clip.get_tokenizer(arch)(PROMPTS)
    with torch.no_grad():
        feats = model(reward.preprocess(images), tokens)  # {"image_features", "text_features"}, normalised
        expected = torch.diagonal(feats["image_features"] @ feats["text_features"].T)
        torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=1e-5)

        # Same model on the PIL letterbox of HPSv2's spec: equal up to uint8 rounding.
        side = int(model.visual.image_size[0])
        pil_pixels = torch.stack([pil_letterbox(im, side) for im in images])
        via_pil = (model.encode_image(pil_pixels, normalize=True) * feats["text_features"]).sum(-1)
        # open_clip's own preprocess_val centre-crops (non-square images differ): not HPS's spec.
        cropped = torch.stack([preprocess_val(im) for im in to_pil(images)])
        via_crop = (model.encode_image(cropped, normalize=True) * feats["text_features"]).sum(-1)
    assert (via_pil - out.scores).abs().max() < 0.02
    assert (via_crop - out.scores).abs().max() > (via_pil - out.scores).abs().max()


def test_hps_alias_options_and_batching(arch: str, ckpt: Path) -> None:
    images = smooth_images(4, seed=9)
    single = build_reward(
        "hps", options={"hps": {"checkpoint_path": str(ckpt), "arch": arch, "batch_size": 1}}
    )
    batched = REWARDS.get("hpsv2.1")(checkpoint_path=ckpt, arch=arch, batch_size=4)
    assert single.name == "hpsv2.1" and single.batch_size == 1
    torch.testing.assert_close(
        single(images=images, prompts=PROMPTS).scores,
        batched(images=images, prompts=PROMPTS).scores,
        atol=1e-5,
        rtol=1e-5,
    )


def test_hps_accepts_bare_and_ddp_prefixed_state_dicts(arch: str, ckpt: Path, tmp_path: Path) -> None:
    images = smooth_images(2, seed=10)
    expected = REWARDS.get("hpsv2.1")(checkpoint_path=ckpt, arch=arch)(
        images=images, prompts=PROMPTS[:2]
    ).scores
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    torch.save({f"module.{k}": v.half() for k, v in state.items()}, tmp_path / "ddp_fp16.pt")
    got = REWARDS.get("hpsv2.1")(checkpoint_path=tmp_path / "ddp_fp16.pt", arch=arch)(
        images=images, prompts=PROMPTS[:2]
    )
    torch.testing.assert_close(got.scores, expected, atol=2e-3, rtol=0)  # fp16-stored weights, fp32 model


def test_hps_key_mismatch_is_reported_with_counts(arch: str, ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    n = len(state)
    state.pop("visual.ln_post.weight")
    state["visual.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(ShapeError) as info:
        REWARDS.get("hpsv2.1")(checkpoint_path=tmp_path / "bad.pt", arch=arch)
    msg = str(info.value)
    assert f"{n} tensors in the file, {n} in the model" in msg
    assert "1 missing ['visual.ln_post.weight']" in msg and "1 unexpected ['visual.extra.weight']" in msg
    # The real ViT-H-14 architecture rejects the tiny checkpoint by shape, without touching its size.
    with pytest.raises(ShapeError, match="wrong shape"):
        REWARDS.get("hpsv2.1")(checkpoint_path=ckpt, arch="ViT-H-14")
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        REWARDS.get("hpsv2.1")(checkpoint_path=ckpt, arch="ViT-Nope")


def test_hps_offline_without_weights_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_empty_hf_cache(monkeypatch, tmp_path)
    msg = assert_fast_missing_weights(
        REWARDS.get("hps"),
        "xswu/HPSv2/HPS_v2.1_compressed.pt",
        "TDMBENCH_HPSV2_CHECKPOINT",
        "hps.checkpoint_path",
    )
    assert "tdmbench weights download hpsv2.1.checkpoint" in msg


def test_hps_metadata() -> None:
    cls = REWARDS.get("hps")
    assert cls.name == "hpsv2.1" and cls.higher_is_better and "cosine" in cls.scale
    assert [w.filename for w in cls.weight_files] == ["HPS_v2.1_compressed.pt"]
