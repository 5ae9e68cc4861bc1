"""The toy world: grammar, renderer and the strict rule-based detector (GenEval's `shapes` backend)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from scipy import ndimage

from tdm_r1.apps.toybuild.render import relations, render
from tdm_r1.rewards.geneval import evaluate
from tdm_r1.toyworld.detector import ShapeDetector, detect_image
from tdm_r1.toyworld.grammar import (
    GENEVAL_TASKS,
    TASKS,
    PromptSampler,
    benchmark_prompts,
    task_prompts,
)
from tdm_r1.toyworld.world import COLORS, IMAGE_SIZE


def test_splits_are_disjoint_where_they_hold_out_and_deterministic() -> None:
    for task in ("color_attr",):
        train = {p["prompt"] for p in task_prompts(task, "train")}
        test = {p["prompt"] for p in task_prompts(task, "test")}
        assert train and test and not train & test
    assert benchmark_prompts("geneval") == benchmark_prompts("geneval")
    cases = benchmark_prompts("geneval")
    assert collections.Counter(c["tag"] for c in cases) == {t: 48 for t in GENEVAL_TASKS}
    assert len({c["id"] for c in cases}) == len(cases)
    assert all(c["include"][0]["count"] >= 2 for c in cases if c["tag"] == "counting")
    ocr = benchmark_prompts("ocr")
    assert all(c["prompt"] == f'a sign that says "{c["target_text"]}"' for c in ocr)
    a, b = PromptSampler(seed=3).sample(20), PromptSampler(seed=3).sample(20)
    assert a == b


def test_metadata_is_geneval_format() -> None:
    for task in GENEVAL_TASKS:
        for p in task_prompts(task, "test"):
            assert p["tag"] == task and p["prompt"].startswith("a photo of ")
            for clause in p["include"]:
                assert set(clause) <= {"class", "count", "color", "position"}
    pos = task_prompts("position", "train")[0]
    assert pos["include"][1]["position"][1] == 0  # relative to clause 0, as GenEval


@pytest.mark.parametrize("seed", [0, 1])
def test_detector_finds_what_the_renderer_drew(seed: int) -> None:
    """2 x 1500 renders of every GenEval task: exact classes and colours, every render correct."""
    sampler = PromptSampler(weights={t: 1.0 for t in GENEVAL_TASKS}, seed=seed)
    rng = np.random.default_rng(seed)
    exact = correct = 0
    n = 1500
    for meta in sampler.sample(n):
        image, objects = render(meta, rng)
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
        dets, info = detect_image(image)
        exact += sorted((d["class"], d["color"]) for d in dets) == sorted((o.cls, o.color) for o in objects)
        correct += evaluate(meta, dets).correct
        for d in dets:
            assert d["score"] > 0.9  # clean renders pass GenEval's counting threshold
    assert exact / n >= 0.999 and correct / n >= 0.999


def test_positions_satisfy_the_geneval_rule() -> None:
    rng = np.random.default_rng(0)
    for meta in task_prompts("position", "train") * 20:
        _, objects = render(meta, rng)
        rel = meta["include"][1]["position"][0]
        assert rel in relations(objects[1].box, objects[0].box)


def _null_images(rng: np.random.Generator, n: int = 100) -> dict[str, list[np.ndarray]]:
    palette = np.array(list(COLORS.values()))
    out: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for _ in range(n):
        out["noise"].append(np.clip(rng.normal(160, 60, (64, 64, 3)), 0, 255).astype(np.uint8))
        im = np.full((64, 64, 3), 160, np.uint8)
        for _ in range(int(rng.integers(20, 200))):
            y, x = rng.integers(0, 62, 2)
            s = int(rng.integers(1, 4))
            im[y : y + s, x : x + s] = palette[rng.integers(len(palette))]
        out["speckle"].append(im)
        im = np.full((64, 64, 3), 160, np.uint8)
        cy, cx = rng.integers(16, 48, 2)
        r = int(rng.integers(8, 14))
        yy, xx = np.mgrid[:64, :64]
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (rng.random((64, 64)) > 0.35)
        im[mask] = palette[rng.integers(len(palette))]
        out["fragmented"].append(im)
        f = ndimage.gaussian_filter(rng.normal(0, 1, (64, 64, 3)), (3, 3, 0))
        out["smooth-noise"].append(np.clip(160 + 60 * (f - f.mean()) / f.std(), 0, 255).astype(np.uint8))
    return out


def test_noise_speckle_and_fragments_score_zero_on_every_task() -> None:
    """RL optimises against this detector: the null baselines must get nothing (GenEval threshold 0.3)."""
    rng = np.random.default_rng(0)
    cases = benchmark_prompts("geneval")
    for kind, images in _null_images(rng).items():
        for i, image in enumerate(images):
            dets, _ = detect_image(image)
            assert not [d for d in dets if d["score"] > 0.3], kind
            meta = cases[(i * 7) % len(cases)]
            assert not evaluate(meta, dets).correct, kind


def test_shape_detector_backend_takes_tensors() -> None:
    import torch

    rng = np.random.default_rng(1)
    meta = task_prompts("color_attr", "test")[0]
    image, objects = render(meta, rng)
    batch = torch.from_numpy(np.stack([image, image])).permute(0, 3, 1, 2).float() / 255
    dets = ShapeDetector()(batch, [meta, meta])
    assert len(dets) == 2 and sorted(d["color"] for d in dets[0]) == sorted(o.color for o in objects)
    with pytest.raises(TypeError):
        ShapeDetector(threshold=0.5)


def test_geneval_reward_with_the_shapes_backend_scores_renders() -> None:
    """The path `tdmbench eval --benchmark toy-geneval` and `train --reward geneval` take."""
    import torch

    from tdm_r1.rewards.base import build_reward

    reward = build_reward("geneval", options={"geneval": {"backend": "shapes"}}, device="cpu")
    rng = np.random.default_rng(3)
    cases = [task_prompts(t, "test")[0] for t in ("single_object", "counting", "color_attr")]
    images = np.stack([render(c, rng)[0] for c in cases])
    wrong = dict(
        cases[0],
        include=[{"class": "triangle" if "circle" not in cases[0]["prompt"] else "square", "count": 1}],
    )
    batch = torch.from_numpy(np.concatenate([images, images[:1]])).permute(0, 3, 1, 2).float() / 255
    out = reward.score(batch, [c["prompt"] for c in cases] * 2, cases + [wrong])
    assert out.scores.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_every_task_renders() -> None:
    rng = np.random.default_rng(2)
    for task in TASKS:
        for p in task_prompts(task, "train")[:5]:
            image, _ = render(p, rng)
            assert image.std() > 0


def test_ocr_reads_the_rendered_words() -> None:
    """The real OCR reward (RapidOCR) reads clean toy signs: the text task is learnable and scorable."""
    import torch

    from tdm_r1.rewards.ocr import OcrReward

    rng = np.random.default_rng(4)
    cases = benchmark_prompts("ocr")
    images = torch.from_numpy(np.stack([render(c, rng)[0] for c in cases])).permute(0, 3, 1, 2).float() / 255
    out = OcrReward(workers=1)(images=images, prompts=[c["prompt"] for c in cases], metadata=cases)
    assert float(out.scores.mean()) >= 0.98
    assert sum(out.details["exact_match"]) >= 0.95 * len(cases)
