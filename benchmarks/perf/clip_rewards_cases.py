"""Perf cases for the model-based rewards at their REAL architecture sizes, with random weights.

No real weights can be downloaded here, so each case writes random-initialised weights of the
published architecture in the real on-disk format (transformers ``save_pretrained`` folders,
the HPSv2 ``{"state_dict": ...}`` file, ``ImageReward.pt`` with upstream key names, the LAION
``.pth`` head) into a work folder and builds the reward through its real loading path. Speed
and memory do not depend on the weight values.

Use from a perf script::

    from clip_rewards_cases import clip_reward_cases, measure
    for case in clip_reward_cases(workdir, device="cuda"):
        row = measure(case, n_images=32, batch_size=16)

or run this file to measure on this machine and write ``results/perf/rewards_clip.md``::

    python benchmarks/perf/clip_rewards_cases.py --images 8 --batch-size 4
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tdm_r1.registry import REWARDS
from tdm_r1.rewards.base import Reward
from tdm_r1.testing import random_weights as rw

#: reward name -> what the case builds (architecture as published).
ARCHITECTURES: dict[str, str] = {
    "pickscore": "CLIP ViT-H/14 (transformers CLIPModel, PickScore_v1 / laion CLIP-H config), 986 M params",
    "hpsv2.1": "open_clip ViT-H-14, full state dict in HPS_v2.1 format, 986 M params",
    "clipscore": "CLIP ViT-L/14 (transformers CLIPModel, openai/clip-vit-large-patch14 config), 428 M params",
    "aesthetic": "CLIP ViT-L/14 image tower + LAION MLP head 768-1024-128-64-16-1",
    "imagereward": "BLIP ViT-L/16 224 px + BERT-base with cross-attention + MLP head (ImageReward.pt keys)",
}


@dataclass
class RewardCase:
    """One reward at real size: ``build()`` writes its weights (once) and loads the reward."""

    name: str
    architecture: str
    build: Callable[[], Reward]


def clip_reward_cases(
    workdir: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    names: list[str] | None = None,
) -> list[RewardCase]:
    """Cases for pickscore, hpsv2.1, clipscore, aesthetic and imagereward (or ``names``).

    Weights are written lazily into ``workdir`` on the first ``build()`` of a case (the ViT-L
    CLIP folder is shared by clipscore and aesthetic). Disk: about 4 GB (ViT-H/14 CLIP), 4 GB
    (open_clip ViT-H-14), 1.7 GB (ViT-L/14 CLIP), 1.9 GB (ImageReward).
    """
    work = Path(workdir)
    opts: dict[str, Any] = {"device": device, "dtype": dtype, "batch_size": batch_size}

    def once(folder: Path, write: Callable[[], object]) -> Path:
        marker = folder / ".complete"
        if not marker.exists():
            folder.mkdir(parents=True, exist_ok=True)
            write()
            marker.write_text("ok")
        return folder

    def vit_l() -> Path:
        folder = work / "clip-vit-large-patch14"
        return once(folder, lambda: rw.write_hf_clip(folder, "vit-l-14"))

    def pickscore() -> Reward:
        folder = work / "PickScore_v1"
        once(folder, lambda: rw.write_hf_clip(folder, "vit-h-14"))
        return REWARDS.get("pickscore")(model_path=folder, processor_path=folder, **opts)

    def hps() -> Reward:
        folder = work / "HPSv2"
        once(folder, lambda: rw.write_hps_checkpoint(folder / "HPS_v2.1_compressed.pt", "ViT-H-14"))
        return REWARDS.get("hpsv2.1")(checkpoint_path=folder / "HPS_v2.1_compressed.pt", **opts)

    def clipscore() -> Reward:
        return REWARDS.get("clipscore")(model_path=vit_l(), **opts)

    def aesthetic() -> Reward:
        folder = work / "aesthetic"
        once(folder, lambda: rw.write_aesthetic_mlp(folder / "sac+logos+ava1-l14-linearMSE.pth", 768))
        return REWARDS.get("aesthetic")(
            clip_path=vit_l(), mlp_path=folder / "sac+logos+ava1-l14-linearMSE.pth", **opts
        )

    def imagereward() -> Reward:
        folder = work / "ImageReward"
        once(folder, lambda: rw.write_imagereward(folder, "blip-large"))
        return REWARDS.get("imagereward")(
            checkpoint_path=folder / "ImageReward.pt",
            med_config_path=folder / "med_config.json",
            tokenizer_path=folder / "vocab.txt",
            **opts,
        )

    builders = {
        "pickscore": pickscore,
        "hpsv2.1": hps,
        "clipscore": clipscore,
        "aesthetic": aesthetic,
        "imagereward": imagereward,
    }
    chosen = names or list(builders)
    unknown = sorted(set(chosen) - set(builders))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; valid: {list(builders)}")
    return [RewardCase(n, ARCHITECTURES[n], builders[n]) for n in chosen]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(case: RewardCase, *, n_images: int = 8, resolution: int = 512, seed: int = 0) -> dict[str, Any]:
    """Build the case, score one warm-up image, then time ``n_images`` images (in the reward's
    ``batch_size`` chunks). Images are (n,3,resolution,resolution) random in [0,1]."""
    t0 = time.perf_counter()
    reward = case.build()  # includes writing the weights the first time
    t_build = time.perf_counter() - t0
    device = getattr(reward, "device", torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n_images, 3, resolution, resolution, generator=g)
    prompts = [f"a photo of object number {i} on a table" for i in range(n_images)]
    reward(images=images[:1], prompts=prompts[:1])  # warm-up
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t1, c1 = time.perf_counter(), time.process_time()
    out = reward(images=images, prompts=prompts)
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - t1, time.process_time() - c1
    row = {
        "reward": case.name,
        "architecture": case.architecture,
        "device": str(device),
        "dtype": str(getattr(reward, "dtype", "")).removeprefix("torch."),
        "batch_size": getattr(reward, "batch_size", None),
        "images": n_images,
        "seconds": round(seconds, 2),
        "images_per_s": round(n_images / seconds, 3),
        # CPU time of this process per image: on a shared machine, wall time also measures the neighbours.
        "cpu_s_per_image": round(cpu_seconds / n_images, 2),
        "build_s": round(t_build, 1),
        "score_mean": round(float(out.scores.mean()), 4),
    }
    if device.type == "cuda":
        row["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del reward, out
    gc.collect()
    return row


def write_markdown(rows: list[dict[str, Any]], path: Path, *, command: str, note: str) -> None:
    from tabulate import tabulate

    cols = [
        "reward",
        "device",
        "dtype",
        "batch_size",
        "images",
        "seconds",
        "images_per_s",
        "cpu_s_per_image",
        "build_s",
    ]
    if any("peak_gpu_mem_gib" in r for r in rows):
        cols.append("peak_gpu_mem_gib")
    table = tabulate([[r.get(c, "") for c in cols] for r in rows], headers=cols, tablefmt="github")
    arch = "\n".join(f"- `{r['reward']}`: {r['architecture']}" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Model-reward throughput at real architecture sizes (random weights)\n\n"
        f"Command: `{command}`\n\n{note}\n\n{table}\n\nArchitectures:\n\n{arch}\n\n"
        "`seconds` times the scoring of `images` 512x512 images after one warm-up image (preprocessing "
        "included; model loading excluded); `images_per_s` = images / seconds (wall clock). "
        "`cpu_s_per_image` = this process's CPU time (all threads) per image: on a machine shared with "
        "other jobs it is the steadier figure; wall-clock speed on an idle machine with T cores is about "
        "T / cpu_s_per_image images/s at best. `build_s` = writing the random checkpoint in its real "
        "format + loading it through the reward's real loading path (0 when the folder was written by an "
        "earlier case). Scores are meaningless (random weights) and are omitted.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cases", nargs="*", default=None)
    parser.add_argument(
        "--workdir", default=None, help="keep the random checkpoints here (default: a temp dir)"
    )
    parser.add_argument("--out", default="results/perf/rewards_clip.md")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="tdmbench-perf-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        for case in clip_reward_cases(
            work, device=args.device, dtype=args.dtype, batch_size=args.batch_size, names=args.cases
        ):
            row = measure(case, n_images=args.images)
            rows.append(row)
            print(row, flush=True)
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    load = os.getloadavg()
    note = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min); peak process RSS over all cases "
        f"{peak_rss_gib:.1f} GiB."
    )
    command = "python benchmarks/perf/clip_rewards_cases.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_markdown(rows, Path(args.out), command=command.strip(), note=note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
