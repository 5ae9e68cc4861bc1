"""The official GenEval detector (``mmdet`` backend) end to end: GenEval's Mask2Former Swin-S config
built from the mmdet wheel with random weights (no download), saved as a checkpoint, run through the
reward on rendered images. Needs mmdet + mmcv compiled from source: ``make test-mmdet``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.mmdet
mmdet = pytest.importorskip("mmdet")
pytest.importorskip("mmcv.ops")  # the compiled extension (mmcv-lite lacks it)

from tdm_r1.apps.toybuild.render import render_batch  # noqa: E402
from tdm_r1.rewards import build_reward  # noqa: E402
from tdm_r1.rewards.geneval import OBJECT_NAMES, evaluate  # noqa: E402
from tdm_r1.rewards.geneval_mmdet import MmdetDetector, _config_path  # noqa: E402

RED_CAR = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a red car"}
TWO_DOGS = {
    "tag": "counting",
    "include": [{"class": "dog", "count": 2}],
    "exclude": [{"class": "dog", "count": 3}],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GenEval's detector config with random weights (backbone init off: nothing is downloaded)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(_config_path(mmdet)))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp("mmdet") / "m2f_random.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {"dataset_meta": {"classes": OBJECT_NAMES}}}, path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_reward_geneval_mask2former import save_tiny_clip

    path = tmp_path_factory.mktemp("clip")
    save_tiny_clip(path)
    return path


def images() -> torch.Tensor:
    """(2, 3, 64, 64) rendered toy scenes (a red circle, two squares): the detector has random
    weights, so what is drawn only has to be an image; the COCO metadata goes to the reward."""
    toy = [
        {
            "tag": "colors",
            "include": [{"class": "circle", "count": 1, "color": "red"}],
            "prompt": "a red circle",
        },
        {"tag": "counting", "include": [{"class": "square", "count": 2}], "prompt": "two squares"},
    ]
    arr = render_batch(toy, seed=0)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def test_official_detector_runs_end_to_end(
    checkpoint: Path, clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = MmdetDetector(checkpoint=checkpoint, clip_path=clip_dir, min_score=0.0)
    assert detector.identity == "s800x1333" and len(detector.model.dataset_meta["classes"]) == 80
    shapes: list[Any] = []
    forward = detector.model.data_preprocessor.forward

    def spy(data: Any, training: bool = False) -> Any:
        out = forward(data, training)
        shapes.append(tuple(out["inputs"].shape))
        return out

    monkeypatch.setattr(detector.model.data_preprocessor, "forward", spy)
    dets = detector(images(), [RED_CAR, TWO_DOGS])
    assert len(dets) == 2
    assert shapes and all(s[-2:] == (800, 800) for s in shapes)  # 64 px detected at the official 800 px
    for image_dets in dets:
        assert [d["score"] for d in image_dets] == sorted((d["score"] for d in image_dets), reverse=True)
        for d in image_dets:
            assert d["class"] in OBJECT_NAMES and 0.0 <= d["score"] <= 1.0
            x0, y0, x1, y1 = d["box"]
            assert -1 <= x0 <= x1 <= 65 and -1 <= y0 <= y1 <= 65  # boxes in image pixels

    reward = build_reward(
        "geneval",
        options={"geneval": {"backend": "mmdet", "checkpoint": str(checkpoint), "clip_path": str(clip_dir)}},
    )
    assert reward.version == "2-mmdet-s800x1333-correct"
    out = reward(images=images(), prompts=["a red car", "two dogs"], metadata=[RED_CAR, TWO_DOGS])
    raw = reward.detector(images(), [RED_CAR, TWO_DOGS])
    for i, meta in enumerate([RED_CAR, TWO_DOGS]):
        expected = evaluate(meta, raw[i])
        assert out.scores[i].item() == float(expected.correct)
        assert out.details["reason"][i] == expected.reason
