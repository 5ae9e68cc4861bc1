"""The ``mask2former`` GenEval backend end to end, on tiny random models saved in the real formats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tdm_r1.errors import MissingWeightsError
from tdm_r1.rewards import build_reward
from tdm_r1.rewards.geneval import COLORS, OBJECT_NAMES, evaluate
from tdm_r1.rewards.geneval_colors import BACKGROUND, ClipColorClassifier, masked_crop
from tdm_r1.rewards.geneval_mask2former import Mask2FormerDetector, geneval_label_names, mask_to_box

CAR = OBJECT_NAMES.index("car")


def coco_label_names() -> list[str]:
    """GenEval names with the three COCO spellings the hub config uses."""
    names = list(OBJECT_NAMES)
    for geneval_name, coco in (
        ("computer mouse", "mouse"),
        ("tv remote", "remote"),
        ("computer keyboard", "keyboard"),
    ):
        names[names.index(geneval_name)] = coco
    return names


def save_tiny_mask2former(path: Path) -> None:
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    names = coco_label_names()
    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=8,
        num_labels=80, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # make every query a confident "car" so that detections pass 0.3
        model.class_predictor.bias.fill_(-10.0)
        model.class_predictor.bias[CAR] = 10.0
    model.save_pretrained(path)
    Mask2FormerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)


def save_tiny_clip(path: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    base = list(bytes_to_unicode().values())
    vocab = {
        t: i for i, t in enumerate(base + [b + "</w>" for b in base] + ["<|startoftext|>", "<|endoftext|>"])
    }
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"], "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(1)
    CLIPModel(config).eval().save_pretrained(path)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-geneval")
    save_tiny_mask2former(root / "m2f")
    save_tiny_clip(root / "clip")
    return root / "m2f", root / "clip"


def images(n: int = 2, h: int = 48, w: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(3))


RED_CAR = {
    "tag": "colors",
    "include": [{"class": "car", "count": 1, "color": "red"}],
    "prompt": "a photo of a red car",
}
TWO_CARS = {
    "tag": "counting",
    "include": [{"class": "car", "count": 2}],
    "exclude": [{"class": "car", "count": 3}],
}


def test_detector_output_and_clip_colours(
    tiny_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    m2f, clip = tiny_dirs
    detector = Mask2FormerDetector(detector_path=m2f, clip_path=clip, min_score=0.3)
    assert detector.labels[64:67] == ["computer mouse", "tv remote", "computer keyboard"]

    calls: list[tuple[str, int, list[str]]] = []
    original = ClipColorClassifier.classify

    def spy(self: ClipColorClassifier, image: Any, objects: Any, classname: str) -> list[str]:
        out = original(self, image, objects, classname)
        calls.append((classname, len(objects), out))
        return out

    monkeypatch.setattr(ClipColorClassifier, "classify", spy)
    out = detector(images(), [RED_CAR, TWO_CARS])
    assert len(out) == 2
    for dets in out:
        assert dets, "the boosted car class must produce detections"
        assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
        for d in dets:
            assert set(d) == {"class", "box", "score", "color"}
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48
            assert d["class"] == "car" and 0.3 <= d["score"] <= 1.0
    # colours only where a clause asks for one, and exactly what the CLIP classifier returned
    assert len(calls) == 1 and calls[0][0] == "car" and calls[0][1] == len(out[0])
    assert [d["color"] for d in out[0]] == calls[0][2]
    assert all(c in COLORS for c in calls[0][2])
    assert all(d["color"] is None for d in out[1])


def test_masked_crop_and_classifier(tiny_dirs: tuple[Path, Path]) -> None:
    _, clip = tiny_dirs
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:15, 10:20] = True
    crop = masked_crop(image, [8.0, 4.0, 22.4, 16.6], mask)  # PIL rounds the box: (8, 4, 22, 17)
    assert crop.size == (14, 13)
    arr = np.asarray(crop)
    assert tuple(arr[0, 0]) == (153, 153, 153)  # outside the mask: #999999
    assert tuple(arr[1, 2]) == (255, 0, 0)  # (x=10, y=5) is inside
    assert BACKGROUND == "#999999"

    clf = ClipColorClassifier(clip)
    text = clf.text_classifier("car")
    assert text.shape[0] == len(COLORS)
    assert torch.allclose(text.norm(dim=-1), torch.ones(len(COLORS)), atol=1e-5)
    assert clf.text_classifier("car") is text  # cached per class
    colors = clf.classify(image, [([8, 4, 22, 17], mask), ([0, 0, 40, 30], None)], "car")
    # the same decision computed by hand from the model's two towers
    with torch.no_grad():
        pv = clf.processor(images=[masked_crop(image, [8, 4, 22, 17], mask)], return_tensors="pt")[
            "pixel_values"
        ]
        feats = clf.model.get_image_features(pixel_values=pv)
        feats = getattr(feats, "pooler_output", feats)
        expected = COLORS[int((torch.nn.functional.normalize(feats, dim=-1) @ text.T).argmax())]
    assert colors[0] == expected and colors[1] in COLORS


def test_reward_end_to_end(tiny_dirs: tuple[Path, Path]) -> None:
    m2f, clip = tiny_dirs
    reward = build_reward(
        "geneval",
        options={"geneval": {"backend": "mask2former", "detector_path": str(m2f), "clip_path": str(clip)}},
    )
    imgs = images()
    out = reward(images=imgs, prompts=["a photo of a red car", "two cars"], metadata=[RED_CAR, TWO_CARS])
    dets = reward.detector(imgs, [RED_CAR, TWO_CARS])
    for i, meta in enumerate([RED_CAR, TWO_CARS]):
        expected = evaluate(meta, dets[i])
        assert out.scores[i].item() == float(expected.correct)
        assert out.details["reason"][i] == expected.reason
        assert out.details["partial"][i].item() == pytest.approx(expected.partial)
    assert out.details["tag"] == ["colors", "counting"]


def test_mask_to_box_and_labels() -> None:
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[2:5, 3:9] = True
    assert mask_to_box(mask) == [3.0, 2.0, 9.0, 5.0]
    assert geneval_label_names({0: "Mouse", 1: "dining_table", 2: "car"}) == [
        "computer mouse",
        "dining table",
        "car",
    ]


def test_offline_missing_weights_fail_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dirs: tuple[Path, Path]
) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("TDMBENCH_GENEVAL_DETECTOR", "TDMBENCH_GENEVAL_CLIP"):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with pytest.raises(MissingWeightsError, match="facebook/mask2former-swin-small-coco-instance") as info:
        build_reward("geneval")
    assert time.monotonic() - start < 5.0
    assert "geneval.detector_path" in str(info.value)
    m2f, _ = tiny_dirs
    with pytest.raises(MissingWeightsError, match="openai/clip-vit-large-patch14"):
        build_reward("geneval", options={"geneval": {"detector_path": str(m2f)}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="not a complete Mask2Former folder"):
        build_reward("geneval", options={"geneval": {"detector_path": str(tmp_path / "empty")}})


def test_official_scale_geometry() -> None:
    from tdm_r1.errors import ConfigError
    from tdm_r1.rewards.geneval_mask2former import padded_size, parse_scale, rescale_size

    assert parse_scale("official") == (800, 1333) and parse_scale("processor") is None
    assert parse_scale("640x1066") == (640, 1066)
    for bad in ("800", "1333x800", "0x10", "big"):
        with pytest.raises(ConfigError, match="detector_scale"):
            parse_scale(bad)
    assert rescale_size(512, 512, (800, 1333)) == (800, 800)  # a 512-px image is detected at 800 px
    assert rescale_size(48, 64, (800, 1333)) == (800, 1067)  # shorter side 800
    assert rescale_size(512, 2048, (800, 1333)) == (333, 1333)  # longer side capped at 1333
    assert padded_size(800, 1067) == (800, 1088) and padded_size(333, 1333) == (352, 1344)


def test_official_scale_input_size_and_image_resolution_masks(
    tiny_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model sees the shorter side at 800 (padded to /32) and masks come back at the image's
    own resolution; the processor path sees 64 x 64 (the tiny processor's size)."""
    m2f, clip = tiny_dirs
    official = Mask2FormerDetector(detector_path=m2f, clip_path=clip, min_score=0.3)
    legacy = Mask2FormerDetector(detector_path=m2f, clip_path=clip, min_score=0.3, detector_scale="processor")
    assert official.identity == "s800x1333" and legacy.identity == "processor"

    seen: list[tuple[int, ...]] = []
    for det in (official, legacy):
        forward = det.model.forward

        def spy(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            seen.append(tuple(kwargs["pixel_values"].shape))
            return _forward(*args, **kwargs)

        monkeypatch.setattr(det.model, "forward", spy)
    masks: list[tuple[int, ...]] = []
    original = ClipColorClassifier.classify

    def classify(self: ClipColorClassifier, image: Any, objects: Any, classname: str) -> list[str]:
        masks.extend(m.shape for _, m in objects)
        return original(self, image, objects, classname)

    monkeypatch.setattr(ClipColorClassifier, "classify", classify)
    imgs = images(1)  # 48 x 64
    out_official = official(imgs, [RED_CAR])[0]
    assert seen == [(1, 3, 800, 1088)]
    assert out_official and masks and set(masks) == {(48, 64)}
    for d in out_official:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48 and d["score"] >= 0.3
    legacy(imgs, [RED_CAR])
    assert seen[1] == (1, 3, 64, 64)

    # The reward's identity names the scale, so scores at different scales never mix.
    reward = build_reward("geneval", options={"geneval": {"detector_path": str(m2f), "clip_path": str(clip)}})
    assert reward.version == "2-mask2former-s800x1333-correct"
    small = build_reward(
        "geneval",
        options={
            "geneval": {"detector_path": str(m2f), "clip_path": str(clip), "detector_scale": "processor"}
        },
    )
    assert small.version == "2-mask2former-processor-correct"


def test_instance_postprocess_matches_a_hand_computation() -> None:
    """Two queries, three classes (+ no-object), 2x3 masks: the top-Q (query, class) pairs by class
    probability, score = class prob x mean sigmoid inside the mask, empty masks dropped."""
    from tdm_r1.rewards.geneval_mask2former import instance_postprocess

    cls = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    masks = torch.tensor([[[2.0, 2.0, -1.0], [-1.0, -1.0, -1.0]], [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]])
    res = instance_postprocess(cls, masks, min_score=0.0)
    p0 = torch.softmax(cls[0], 0)[0]
    expected = float(p0 * torch.sigmoid(torch.tensor(2.0)))
    assert [s["label_id"] for s in res["segments_info"]] == [0]  # query 1's mask is empty
    assert res["segments_info"][0]["score"] == pytest.approx(expected, rel=1e-5)
    assert res["segmentation"].shape == (1, 2, 3)
    assert res["segmentation"][0].tolist() == [[True, True, False], [False, False, False]]
    assert instance_postprocess(cls, masks, min_score=expected + 1e-3)["segments_info"] == []
