"""``tdmbench toy build``: rebuild the toy world's models from scratch, resumably.

Stages (each resumes from its checkpoints when rerun with the same ``--out``):

1. ``ae``: the autoencoder on fresh renders (``train_ae``);
2. ``teacher``: the text-to-image teacher, a tiny SD3 pipeline (``train_teacher``);
3. ``student``: the 4-step student by TDM distillation (the TDM-R1 trainer with the reward off,
   recipe ``recipes/toy-distill.yaml``).

``--install`` copies the results (fp16 weights) into the package folder that the ``toy-teacher``
and ``toy-4step`` presets load. Two recipes: ``gpu`` (large batches, minutes) and ``cpu``
(2 cores, resumable runs; ``--minutes`` bounds one invocation).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "toyworld" / "weights"


@dataclass(frozen=True)
class Recipe:
    ae_steps: int
    ae_batch: int
    ae_data: int
    teacher_steps: int
    teacher_batch: int
    teacher_lr: float
    teacher_data: int
    student_minutes: float


RECIPES: dict[str, Recipe] = {
    # One H100 (measured step times: AE 27 ms/step at batch 128; teacher 60 ms/step at batch 512):
    # about 1.5 min (AE, incl. rendering) + 6.5 min (teacher) + 2 min (student) = 10 min.
    "gpu": Recipe(2500, 128, 60_000, 6000, 512, 1e-3, 200_000, 2.0),
    # 2 CPU cores (measured: AE ~0.5 s/step at batch 32, teacher 0.65 s/step at batch 64):
    # about 25 min (AE) + 175 min (teacher, two resumable 90-minute runs) + 30 min (student)
    # = 3.8 CPU-hours; run as `tdmbench toy build --recipe cpu --minutes 90` three times.
    "cpu": Recipe(3000, 32, 30_000, 16000, 64, 7e-4, 60_000, 30.0),
}


def _stage_ae(out: Path, recipe: Recipe, device: str, budget: float | None) -> bool:
    from tdm_r1.apps.toybuild.train_ae import AEConfig, train_autoencoder

    if (out / "vae" / "config.json").is_file():
        return True
    cfg = AEConfig(steps=recipe.ae_steps, batch_size=recipe.ae_batch, dataset_size=recipe.ae_data)
    return train_autoencoder(out, cfg, device=device, time_budget_s=budget) is not None


def _stage_teacher(out: Path, recipe: Recipe, device: str, budget: float | None) -> bool:
    from tdm_r1.apps.toybuild.train_teacher import TeacherConfig, train_teacher

    if (out / "toy-teacher" / "model_index.json").is_file():
        return True
    cfg = TeacherConfig(
        steps=recipe.teacher_steps,
        batch_size=recipe.teacher_batch,
        lr=recipe.teacher_lr,
        dataset_size=recipe.teacher_data,
    )
    return train_teacher(out, out / "vae", cfg, device=device, time_budget_s=budget) is not None


def _stage_student(out: Path, recipe: Recipe, device: str, budget: float | None) -> bool:
    from tdm_r1.models.preset import ModelPreset, register_preset
    from tdm_r1.registry import MODELS
    from tdm_r1.train.config import load_train_config
    from tdm_r1.train.trainer import Trainer

    if (out / "student" / "final" / "lora").is_dir():
        return True
    teacher = MODELS.get("toy-teacher")
    local = ModelPreset(
        **{**teacher.__dict__, "name": "toy-teacher-build", "hub_id": str(out / "toy-teacher")}
    )
    register_preset(local)
    minutes = recipe.student_minutes if budget is None else min(recipe.student_minutes, budget / 60)
    cfg = load_train_config(
        "toy-distill",
        flags={
            "model.name": "toy-teacher-build",
            "model.device": device,
            "output_dir": str(out / "student"),
            "max_minutes": minutes,
            "register_as": "toy-4step-build",
        },
    )
    Trainer(cfg).fit()
    return True


def build(
    out: str | Path,
    *,
    recipe: str = "cpu",
    device: str = "cpu",
    stages: tuple[str, ...] = ("ae", "teacher", "student"),
    minutes: float | None = None,
    install: bool = False,
) -> dict[str, Any]:
    """Run the requested stages in order; stop (resumably) when ``minutes`` run out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec = RECIPES[recipe]
    t0 = time.perf_counter()
    done: dict[str, Any] = {"recipe": asdict(rec), "device": device, "stages": {}}
    for stage in stages:
        left = None if minutes is None else minutes * 60 - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            break
        fn = {"ae": _stage_ae, "teacher": _stage_teacher, "student": _stage_student}[stage]
        s0 = time.perf_counter()
        finished = fn(out, rec, device, left)
        done["stages"][stage] = {"finished": finished, "seconds": round(time.perf_counter() - s0, 1)}
        log.info("stage %s: %s in %.0f s", stage, "done" if finished else "paused", time.perf_counter() - s0)
        if not finished:
            break
    log_path = out / "build-log.jsonl"
    with log_path.open("a") as fh:
        fh.write(json.dumps(done) + "\n")
    if install and all(v["finished"] for v in done["stages"].values()) and "student" in done["stages"]:
        install_weights(out)
    return done


def install_weights(out: str | Path, dest: Path = WEIGHTS_DIR) -> None:
    """Copy a finished build into the package (fp16 safetensors; model card untouched)."""
    import torch
    from diffusers import StableDiffusion3Pipeline

    out = Path(out)
    pipe = StableDiffusion3Pipeline.from_pretrained(
        out / "toy-teacher", text_encoder_3=None, tokenizer_3=None
    )
    for module in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.vae):
        module.to(torch.float16)
    target = dest / "toy-teacher"
    if target.exists():
        shutil.rmtree(target)
    pipe.save_pretrained(target)
    student = dest / "toy-4step"
    if student.exists():
        shutil.rmtree(student)
    shutil.copytree(out / "student" / "final" / "lora", student)
