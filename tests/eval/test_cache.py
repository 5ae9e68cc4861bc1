from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from tdm_r1.eval.cache import (
    ImageCache,
    ScoreCache,
    ScoreEntry,
    atomic_write_bytes,
    sha256_bytes,
    stable_json,
)
from tdm_r1.images import png_bytes


def test_stable_json_is_canonical() -> None:
    assert stable_json({"b": 1, "a": [1, 2], "c": {"y": 2, "x": 1}}) == '{"a":[1,2],"b":1,"c":{"x":1,"y":2}}'
    assert stable_json({"t": torch.tensor([1.5, 2.0]), "p": Path("/x")}) == '{"p":"/x","t":[1.5,2.0]}'


def test_image_keys_depend_on_every_input() -> None:
    ident = ImageCache.model_identity({"hub": "m", "lora": None, "sampling": {"steps": 4, "guidance": 0.0}})
    assert ident == ImageCache.model_identity(
        {"lora": None, "sampling": {"guidance": 0.0, "steps": 4}, "hub": "m"}
    )
    assert ident != ImageCache.model_identity(
        {"hub": "m", "lora": None, "sampling": {"steps": 8, "guidance": 0.0}}
    )
    base = ImageCache.key(ident, "a cat", 0)
    assert len({base, ImageCache.key(ident, "a cat", 1), ImageCache.key(ident, "a dog", 0)}) == 3
    assert base == ImageCache.key(ident, "a cat", 0)


def test_image_cache_round_trip_and_corruption(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    image = torch.rand(3, 8, 8)
    data = png_bytes(image)
    entry = cache.put("ab" * 32, data, {"prompt": "p", "seed": 0})
    assert entry.sha256 == sha256_bytes(data) and entry.path.read_bytes() == data
    assert cache.get("ab" * 32) == entry
    loaded = cache.load(entry)
    assert torch.equal(loaded, torch.round(image * 255) / 255)  # PNG is lossless at uint8
    entry.path.write_bytes(data[:-1])  # truncated
    assert cache.get("ab" * 32) is None and not entry.path.exists()
    cache.put("cd" * 32, data, {})
    (tmp_path / "images" / "cd" / f"{'cd' * 32}.json").unlink()  # killed between PNG and sidecar
    assert cache.get("cd" * 32) is None


def test_score_entries_keep_nan_and_details(tmp_path: Path) -> None:
    cache = ScoreCache(tmp_path)
    key = ScoreCache.key("f" * 64, "ocr@1", {"backend": "rapidocr"}, "a sign", {"target_text": "CAT"})
    assert key != ScoreCache.key("f" * 64, "ocr@1", {}, "a sign", {"target_text": "CAT"})
    cache.put(key, ScoreEntry(float("nan"), "no quoted text", {"recognized": ""}, "ocr@1", "1"))
    got = cache.get(key)
    assert got is not None and math.isnan(got.score)
    assert (got.nan_reason, got.details, got.reward_id, got.reward_version) == (
        "no quoted text",
        {"recognized": ""},
        "ocr@1",
        "1",
    )
    cache.path(key).write_text("{not json")
    assert cache.get(key) is None and not cache.path(key).exists()


def test_atomic_write_leaves_the_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"old")

    def boom(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temporary left
