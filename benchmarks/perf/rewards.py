"""Reward throughput on this machine (images/s) -> results/perf/rewards.md.

    python benchmarks/perf/rewards.py                   # every case
    python benchmarks/perf/rewards.py --cases ocr-serial,jpeg

Each measurement is a :class:`Case`: ``setup()`` builds the reward and its inputs (not timed) and
returns a zero-argument callable that scores one batch; the batch is run once to warm up, then
``--repeats`` times; the table reports the median. Other rewards (e.g. the CLIP family) add
themselves with :func:`add_case` from another module, or by appending to :data:`CASES`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("perf.rewards")

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """One throughput measurement.

    Attributes:
        name: short id (``--cases`` selects by it).
        setup: builds everything (not timed); returns ``(run, n_images, cleanup)`` where ``run()``
            scores ``n_images`` images once and ``cleanup()`` releases resources.
        note: what exactly is measured (input size, options).
    """

    name: str
    setup: Callable[[], tuple[Callable[[], Any], int, Callable[[], None]]]
    note: str
    requires_cuda: bool = False


CASES: list[Case] = []

#: Run-wide settings the cases read (``--device``).
SETTINGS: dict[str, Any] = {"device": "cpu"}


def add_case(
    name: str, note: str, *, requires_cuda: bool = False
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator registering a setup function as a :class:`Case`."""

    def deco(setup: Callable[[], Any]) -> Callable[[], Any]:
        CASES.append(Case(name=name, setup=setup, note=note, requires_cuda=requires_cuda))
        return setup

    return deco


# ----------------------------------------------------------------------------------- inputs
def _signs(n: int, size: int = 256) -> Any:
    """``n`` rendered text signs, (n, 3, size, size) in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    from tdm_r1.images import from_pil

    font_path = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
    font = ImageFont.truetype(str(font_path), 36) if font_path.is_file() else ImageFont.load_default(size=36)
    words = ["OPEN", "Spring 2024", "tdmbench", "CAFE", "Stop", "HELLO", "exit", "Sale 50%"]
    ims = []
    for i in range(n):
        im = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(im)
        word = words[i % len(words)]
        width = draw.textlength(word, font=font)
        draw.text(((size - width) / 2, size / 2 - 18), word, fill="black", font=font)
        ims.append(im)
    return from_pil(ims), [f'a sign that says "{words[i % len(words)]}"' for i in range(n)]


def _perfect_detections(meta: dict[str, Any]) -> list[dict[str, Any]]:
    offsets = {"left of": (-300, 0), "right of": (300, 0), "above": (0, -300), "below": (0, 300)}
    dets, anchors = [], []
    for j, req in enumerate(meta["include"]):
        x, y = 1000.0, 1000.0 + 1000 * j
        if "position" in req:
            tx, ty = anchors[req["position"][1]]
            x, y = tx + offsets[req["position"][0]][0], ty + offsets[req["position"][0]][1]
        anchors.append((x, y))
        for k in range(req["count"]):
            dets.append(
                {"class": req["class"], "box": [x + 150 * k, y, x + 150 * k + 100, y + 100], "score": 0.95,
                 "color": req.get("color", "white")}
            )  # fmt: skip
    return dets


# ------------------------------------------------------------------------------------ cases
def _ocr_setup(workers: int, threads: int | None = None) -> tuple[Callable[[], Any], int, Callable[[], None]]:
    from tdm_r1.rewards.ocr import OcrReward

    images, prompts = _signs(16)
    reward = OcrReward(workers=workers, threads=threads)
    return (lambda: reward(images=images, prompts=prompts)), len(prompts), reward.close


@add_case(
    "ocr-serial",
    "OCR reward, RapidOCR (PP-OCR ONNX), workers=1 (threads = cpu count), 16 rendered 256x256 signs",
)
def ocr_serial() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    return _ocr_setup(1)


@add_case("ocr-serial-1thread", "OCR reward, RapidOCR, workers=1, threads=1, 16 rendered 256x256 signs")
def ocr_serial_one_thread() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    return _ocr_setup(1, threads=1)


@add_case(
    "ocr-parallel",
    "OCR reward, RapidOCR, workers=2 (process pool, warm, 1 thread each), 16 rendered 256x256 signs",
)
def ocr_parallel() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    return _ocr_setup(2)


@add_case(
    "ocr-parallel-all", "OCR reward, RapidOCR, workers=os.cpu_count() (warm pool), 64 rendered 256x256 signs"
)
def ocr_parallel_all() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    from tdm_r1.rewards.ocr import OcrReward

    images, prompts = _signs(64)
    reward = OcrReward(workers=os.cpu_count())
    return (lambda: reward(images=images, prompts=prompts)), len(prompts), reward.close


def _toy_batch(task: str, n: int) -> tuple[Any, list[str], list[dict[str, Any]]]:
    """``n`` toy-world renders (64x64) of the toy benchmark ``task`` with their metadata."""
    import numpy as np
    import torch

    from tdm_r1.apps.toybuild.render import render
    from tdm_r1.toyworld.grammar import benchmark_prompts

    suite = benchmark_prompts(task)
    cases = (suite * (n // len(suite) + 1))[:n]
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([render(c, rng)[0] for c in cases])).permute(0, 3, 1, 2).float() / 255
    return images, [c["prompt"] for c in cases], cases


@add_case("toy-ocr", "OCR reward on 64 toy-world signs (64x64), workers=1, threads=1 (the toy RL reward)")
def toy_ocr() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    from tdm_r1.rewards.ocr import OcrReward

    images, prompts, metas = _toy_batch("ocr", 64)
    reward = OcrReward(workers=1, threads=1)
    return (lambda: reward(images=images, prompts=prompts, metadata=metas)), len(prompts), reward.close


@add_case(
    "toy-geneval-shapes", "GenEval reward, shapes backend (rule-based detector), 288 toy renders (64x64)"
)
def toy_geneval() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    from tdm_r1.rewards.geneval import GenEvalReward

    images, prompts, metas = _toy_batch("geneval", 288)
    reward = GenEvalReward(backend="shapes", score="partial")
    return (lambda: reward(images=images, prompts=prompts, metadata=metas)), len(prompts), lambda: None


@add_case("jpeg", "jpeg-compressibility, 32 images 512x512 (signs + uniform noise)")
def jpeg() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    import torch

    from tdm_r1.rewards.jpeg import JpegCompressibility

    signs, _ = _signs(16, size=512)
    noise = torch.rand(16, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    images = torch.cat([signs, noise])
    reward = JpegCompressibility()
    return (lambda: reward(images=images, prompts=[""] * 32)), 32, lambda: None


@add_case("geneval-rules", "GenEval rule core evaluate() (official+strict+partial), 553 official prompts")
def geneval_rules() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    from tdm_r1.data import data_path
    from tdm_r1.rewards.geneval import evaluate

    rows = [json.loads(line) for line in data_path("geneval").read_text().splitlines()]
    dets = [_perfect_detections(m) for m in rows]

    def run() -> None:
        for meta, d in zip(rows, dets, strict=True):
            evaluate(meta, d)

    return run, len(rows), lambda: None


def _save_realsize_models(root: Path) -> tuple[Path, Path]:
    """Random-init models of the REAL configurations (Mask2Former Swin-S COCO, CLIP ViT-L/14).

    The class head is biased towards "car" so that detections pass the thresholds and the colour
    classifier runs as it would on real images. The CLIP tokenizer is a byte-level stand-in
    (the real vocabulary is not needed for timing).
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTokenizer,
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from tdm_r1.rewards.geneval import OBJECT_NAMES

    backbone = SwinConfig(
        image_size=224, patch_size=4, embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=backbone, num_labels=80, id2label=dict(enumerate(OBJECT_NAMES)),
        label2id={n: i for i, n in enumerate(OBJECT_NAMES)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        model.class_predictor.bias.fill_(-10.0)
        model.class_predictor.bias[OBJECT_NAMES.index("car")] = 10.0
    m2f = root / "mask2former"
    model.save_pretrained(m2f)
    Mask2FormerImageProcessor(size={"height": 384, "width": 384}).save_pretrained(m2f)
    log.info("Mask2Former: %.1f M parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    del model

    base = list(bytes_to_unicode().values())
    vocab = {
        t: i for i, t in enumerate(base + [b + "</w>" for b in base] + ["<|startoftext|>", "<|endoftext|>"])
    }
    clip_cfg = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "max_position_embeddings": 77, "bos_token_id": vocab["<|startoftext|>"],
                     "eos_token_id": vocab["<|endoftext|>"], "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                       "num_attention_heads": 16, "image_size": 224, "patch_size": 14},
        projection_dim=768,
    )  # fmt: skip
    clip = root / "clip"
    clip_model = CLIPModel(clip_cfg).eval()
    clip_model.save_pretrained(clip)
    log.info("CLIP: %.1f M parameters", sum(p.numel() for p in clip_model.parameters()) / 1e6)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        clip
    )
    return m2f, clip


@add_case(
    "geneval-mask2former",
    "GenEval reward, mask2former backend on --device: real-size random-init Mask2Former Swin-S + CLIP ViT-L/14, "
    "16 images 512x512 (half with a colour clause), detector batch 8",
    requires_cuda=True,
)
def geneval_mask2former() -> tuple[Callable[[], Any], int, Callable[[], None]]:
    import shutil
    import tempfile

    import torch

    from tdm_r1.rewards.geneval import GenEvalReward

    root = Path(tempfile.mkdtemp(prefix="tdm-perf-"))
    m2f, clip = _save_realsize_models(root)
    reward = GenEvalReward(
        backend="mask2former",
        device=SETTINGS["device"],
        detector_path=str(m2f),
        clip_path=str(clip),
        batch_size=8,
    )
    images = torch.rand(16, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    red = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    two = {
        "tag": "counting",
        "include": [{"class": "car", "count": 2}],
        "exclude": [{"class": "car", "count": 3}],
    }
    metas = [red if i % 2 == 0 else two for i in range(16)]

    def run() -> None:
        out = reward(images=images, prompts=[""] * 16, metadata=metas)
        colours = [json.loads(d).get("car", []) for d in out.details["detections"]]
        log.info("  detections per image: %s", [len(c) for c in colours][:4])

    return run, 16, lambda: shutil.rmtree(root)


# -------------------------------------------------------------------------------------- run
def machine() -> dict[str, str]:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "gpu": gpu,
        "cpu": cpu,
        "cpu count": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "load average (1 min, at start)": f"{load:.2f}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def measure(case: Case, repeats: int) -> dict[str, Any]:
    import torch

    cuda = SETTINGS["device"].startswith("cuda")
    run, n, cleanup = case.setup()
    try:
        run()  # warm-up: model loading, worker start-up, caches
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    finally:
        cleanup()
    med = statistics.median(times)
    row = {"case": case.name, "images": n, "median s": f"{med:.3f}", "images/s": f"{n / med:.1f}"}
    if cuda:
        row["peak GPU MiB"] = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"
    return {**row, "what": case.note}


def render_md(info: dict[str, str], rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    lines = ["# Reward throughput", "", "Written by `python benchmarks/perf/rewards.py`.", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", tabulate(rows, headers="keys", tablefmt="github"), ""]
    lines += [
        "Median of the timed repeats after one warm-up batch. The machine is shared with other jobs",
        "(see the load average), so treat the figures as orders of magnitude.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "rewards.md")
    parser.add_argument(
        "--device", default="cpu", help="torch device for model-based cases (cuda cases need cuda)"
    )
    args = parser.parse_args(argv)
    SETTINGS["device"] = args.device
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TDMBENCH_DATA_DIR", str(REPO.parent / "shared" / "data"))
    wanted = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(wanted) - {c.name for c in CASES})
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {[c.name for c in CASES]}")
    info = machine()
    rows = []
    for case in CASES:
        if wanted and case.name not in wanted:
            continue
        if case.requires_cuda and not args.device.startswith("cuda"):
            log.info("skipping %s (needs --device cuda)", case.name)
            continue
        log.info("measuring %s ...", case.name)
        rows.append(measure(case, args.repeats))
        log.info("  %s images/s", rows[-1]["images/s"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_md(info, rows), encoding="utf-8")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
