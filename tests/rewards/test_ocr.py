from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tdm_r1.errors import MissingExtraError
from tdm_r1.images import from_pil
from tdm_r1.rewards import ocr as ocr_mod
from tdm_r1.rewards.ocr import (
    OcrReward,
    PaddleOcrEngine,
    extract_target,
    ocr_match,
    ocr_score,
    parse_paddle_result,
    recognized_text,
)
from tdm_r1.testing.signs import sign


# ----------------------------------------------------------------------------- pure core
@pytest.mark.parametrize(
    ("recognized", "target", "expected"),
    [
        ("HELLO", "hello", 1.0),  # case
        ("hello world", "World", 1.0),  # substring after removing spaces
        ("a big HELLO sign!", "hello", 1.0),  # extra text never penalised
        ("helo", "hello", 0.8),  # one deletion: 1 - 1/5
        ("HELL0", "hello", 0.8),  # one substitution
        ("Spring Colection 2024", "Spring Collection 2024", 0.95),  # 1 edit over 20 chars
        ("", "hello", 0.0),  # nothing read
        ("abcdefghij", "xy", 0.0),  # distance 10 capped at len(target) = 2
        ("hel\u00a0lo", "hello", 0.8),  # only ASCII spaces are removed
        ("h e l l o", "HEL LO", 1.0),
        ("ÄPFEL", "äpfel", 1.0),  # Python lower() is Unicode-aware
    ],
)
def test_ocr_score_exact(recognized: str, target: str, expected: float) -> None:
    assert ocr_score(recognized, target) == pytest.approx(expected, abs=1e-12)


def test_ocr_score_partial_cap_not_binding() -> None:
    # "hellothere" vs "hellothese": one substitution over 10 -> 0.9; "xx" vs "abc": distance 3 -> cap 3 -> 0
    assert ocr_score("hello there", "hello these") == pytest.approx(0.9)
    assert ocr_score("xx", "abc") == 0.0
    assert math.isnan(ocr_score("anything", "   "))


def test_ocr_match_components() -> None:
    m = ocr_match("Hello World", "hello world")
    assert (m.score, m.exact_match, m.substring_match, m.edit_similarity) == (1.0, 1, 1, 1.0)
    m = ocr_match("big hello", "hello")
    assert (m.score, m.exact_match, m.substring_match) == (1.0, 0, 1)
    assert m.edit_similarity == pytest.approx(1 - 3 / 8)  # "bighello" -> "hello": 3 deletions / 8
    m = ocr_match("helo", "hello")
    assert (m.score, m.exact_match, m.substring_match) == (0.8, 0, 0)
    assert m.edit_similarity == pytest.approx(0.8)


def test_extract_target() -> None:
    assert extract_target('A sign that says "Hello World" in neon') == "Hello World"
    assert extract_target('two "first" and "second"') == "first"
    assert extract_target("no quotes at all") is None
    assert extract_target('only an "opening quote') is None
    assert extract_target('empty "" quotes') == ""
    assert extract_target('prompt "x"', {"target_text": "override"}) == "override"
    assert extract_target("prompt", {"target_text": None}) is None


def test_recognized_text_drops_zero_confidence() -> None:
    assert recognized_text([("HEL", 0.9), ("junk", 0.0), ("LO", 0.4)]) == "HELLO"


# -------------------------------------------------------------------------------- reward
@pytest.fixture(scope="module")
def reward() -> OcrReward:
    r = OcrReward(workers=1)
    yield r
    r.close()


def test_nan_reasons_without_target(reward: OcrReward) -> None:
    images = torch.ones(3, 3, 32, 32)
    out = reward(images=images, prompts=["a cat", 'a sign "  "', 'a sign "ok'], metadata=None)
    assert torch.isnan(out.scores).all()
    assert out.details["nan_reason"] == ["no quoted target", "empty quoted target", "no quoted target"]


def test_real_rapidocr_scores(reward: OcrReward) -> None:
    images = from_pil([sign("HELLO"), Image.new("RGB", (256, 256), "white"), sign("HELO"), sign("HELLO")])
    prompts = [
        'a sign saying "HELLO"',
        'a sign saying "HELLO"',
        'a sign saying "hello"',
        'neon "Hello World"',
    ]
    out = reward(images=images, prompts=prompts)
    assert out.scores.tolist() == pytest.approx([1.0, 0.0, 0.8, 0.5])  # 0.5: "hello" vs "helloworld"
    assert out.details["recognized"] == ["HELLO", "", "HELO", "HELLO"]
    assert out.details["exact_match"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert out.details["substring_match"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert out.details["edit_similarity"].tolist() == pytest.approx([1.0, 0.0, 0.8, 0.5])
    assert out.details["nan_reason"] == ["", "", "", ""]
    assert out.details["error"] == ["", "", "", ""]


def test_serial_and_parallel_agree_and_pickle() -> None:
    words = ["OPEN", "CAT", "tdmbench", "Stop"]
    images = from_pil([sign(w) for w in words])
    prompts = [f'a sign "{w}"' for w in ["OPEN", "CAT", "tdmbnch", "Shop"]]
    serial = OcrReward(workers=1)(images=images, prompts=prompts)
    parallel = OcrReward(workers=2)
    try:
        first = parallel(images=images, prompts=prompts)
        again = parallel(images=images, prompts=prompts)  # the pool is reused
        clone = pickle.loads(pickle.dumps(parallel))  # picklable while its pool is running
        assert clone._pool is None and clone.workers == 2
    finally:
        parallel.close()
    assert torch.equal(serial.scores, first.scores) and torch.equal(first.scores, again.scores)
    assert serial.details["recognized"] == first.details["recognized"]
    assert serial.scores.tolist()[:2] == [1.0, 1.0]


# ---------------------------------------------------------------------- engine identity, speed
def test_identity_names_models_by_sha256_and_follows_detection_settings() -> None:
    import hashlib
    import importlib.metadata
    from pathlib import Path

    import rapidocr

    version = importlib.metadata.version("rapidocr")
    new = OcrReward(workers=1)
    old_rule = OcrReward(workers=1, det_limit_side_len=736, det_limit_type="min")
    again = OcrReward(workers=2, threads=1)  # parallelism is not part of what it reads
    ident = new.describe()["engine"]
    assert ident["engine"] == "rapidocr" and ident["version"] == version
    assert ident["det"]["limit_side_len"] == 960 and ident["det"]["limit_type"] == "max"
    models_dir = Path(rapidocr.__file__).parent / "models"
    for task in ("det", "rec"):
        model = ident["models"][task]
        assert model["file"].endswith(".onnx") and f"_{task}_" in model["file"]
        assert model["sha256"] == hashlib.sha256((models_dir / model["file"]).read_bytes()).hexdigest()
    assert new.version.startswith(f"2-rapidocr-{version}-")
    assert new.version == again.version
    assert old_rule.version != new.version
    assert old_rule.describe()["engine"]["det"]["limit_type"] == "min"
    out = new(images=from_pil([sign("OPEN")]), prompts=['"OPEN"'])
    assert out.details["engine"] == [f"rapidocr {version}; det {ident['models']['det']['file']}@"
                                     f"{ident['models']['det']['sha256'][:8]}; rec {ident['models']['rec']['file']}@"
                                     f"{ident['models']['rec']['sha256'][:8]}; det size 960/max"]  # fmt: skip
    again.close()


def test_bad_detection_settings_are_config_errors() -> None:
    from tdm_r1.errors import ConfigError

    with pytest.raises(ConfigError, match="det_limit_type must be 'max' or 'min'"):
        OcrReward(workers=1, det_limit_type="largest")
    with pytest.raises(ConfigError, match="det_limit_side_len must be >= 32"):
        OcrReward(workers=1, det_limit_side_len=8)


def test_small_images_are_detected_at_their_own_size() -> None:
    """The default rule does not scale a 64-px image up (RapidOCR's own rule makes it 736 px)."""
    from tdm_r1.rewards.ocr_engines import RapidOcrEngine

    image = np.zeros((64, 64, 3), np.uint8)
    big = np.zeros((1200, 600, 3), np.uint8)
    new, old = (
        RapidOcrEngine(threads=1),
        RapidOcrEngine(threads=1, det_limit_side_len=736, det_limit_type="min"),
    )
    det_new, det_old = new._engine._load_det_model(), old._engine._load_det_model()
    assert det_new.get_preprocess().resize(image).shape == (64, 64, 3)
    assert det_old.get_preprocess().resize(image).shape == (736, 736, 3)
    assert det_new.get_preprocess().resize(big).shape == (960, 480, 3)  # larger images scale down to 960


def test_toy_signs_read_the_same_as_with_upscaling() -> None:
    """64-px toy signs: the default detection size reads what RapidOCR's 736-px upscaling reads."""
    from tdm_r1.apps.toybuild.render import render
    from tdm_r1.rewards.ocr_engines import RapidOcrEngine
    from tdm_r1.toyworld.grammar import task_prompts

    rng = np.random.default_rng(7)
    cases = task_prompts("text", "train")[:8]
    images = [render(c, rng)[0] for c in cases]
    new, old = (
        RapidOcrEngine(threads=1),
        RapidOcrEngine(threads=1, det_limit_side_len=736, det_limit_type="min"),
    )
    read_new = [recognized_text(new.read(im)) for im in images]
    assert read_new == [recognized_text(old.read(im)) for im in images]
    assert read_new == [extract_target(c["prompt"]) for c in cases]


def test_default_workers_follow_the_usable_cores() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    r = OcrReward()
    assert r.workers == cores and r.threads == 1
    assert OcrReward(workers=1).threads == cores


def test_ls_rewards_names_flow_grpo_engine() -> None:
    from tdm_r1.apps import listing

    assert "PaddleOCR 2.9.1 English models" in listing.render("rewards")


# -------------------------------------------------------------------------------- engines
class FakePaddle:
    """Answers like PaddleOCR 2.9.1 ``.ocr(img, cls=False)``."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[tuple[int, ...], bool]] = []

    def ocr(self, img: np.ndarray, cls: bool = True) -> Any:
        self.calls.append((img.shape, cls))
        return self.result


BOX = [[10.0, 10.0], [90.0, 10.0], [90.0, 40.0], [10.0, 40.0]]


def test_parse_paddle_291_format() -> None:
    result = [[[BOX, ("HEL", 0.98)], [BOX, ("junk", 0.0)], [BOX, ("LO", 0.7)]]]
    assert parse_paddle_result(result) == [("HEL", 0.98), ("junk", 0.0), ("LO", 0.7)]
    assert parse_paddle_result([None]) == []  # nothing detected
    assert parse_paddle_result([[]]) == []
    fake = FakePaddle(result)
    lines = PaddleOcrEngine(engine=fake).read(np.zeros((8, 9, 3), np.uint8))
    assert recognized_text(lines) == "HELLO"
    assert fake.calls == [((8, 9, 3), False)]


def test_paddle_backend_through_the_reward(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePaddle([[[BOX, ("HEL", 0.98)], [BOX, ("LP", 0.9)]]])
    monkeypatch.setitem(ocr_mod.OCR_BACKENDS, "paddleocr", lambda **_: PaddleOcrEngine(engine=fake))
    r = OcrReward(backend="paddleocr", workers=1)
    out = r(images=torch.zeros(1, 3, 16, 16), prompts=['"hello"'])
    assert out.scores.tolist() == [pytest.approx(0.8)]  # "hellp" vs "hello"
    assert out.details["recognized"] == ["HELLP"]
    assert r.id.startswith("ocr@2-paddleocr-unknown-")  # no paddleocr package here: version unknown
    assert r.describe()["engine"]["injected"] == "FakePaddle"


def test_paddle_missing_is_a_clear_error() -> None:
    if "paddleocr" in sys.modules or _importable("paddleocr"):
        pytest.skip("paddleocr is installed here")
    with pytest.raises(MissingExtraError, match=r"pip install 'tdmbench\[paddle\]'"):
        OcrReward(backend="paddleocr")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class Broken:
    errors = (RuntimeError,)

    def read(self, image: np.ndarray) -> list[tuple[str, float]]:
        raise RuntimeError("engine exploded")


def test_engine_failure_scores_zero_with_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ocr_mod.OCR_BACKENDS, "rapidocr", lambda **_: Broken())
    out = OcrReward(workers=1)(images=torch.zeros(2, 3, 8, 8), prompts=['"abc"', "no target"])
    assert out.scores[0].item() == 0.0 and math.isnan(out.scores[1].item())
    assert out.details["error"][0] == "RuntimeError: engine exploded"
    assert out.details["nan_reason"] == ["", "no quoted target"]


def test_import_is_cheap() -> None:
    code = (
        "import sys, tdm_r1.rewards\n"
        "from tdm_r1.registry import REWARDS\n"
        "REWARDS.names()\n"
        "heavy = [m for m in ('rapidocr', 'open_clip', 'paddleocr', 'onnxruntime', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
