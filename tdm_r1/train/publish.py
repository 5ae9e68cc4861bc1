"""What a run publishes: the EMA generator as a model folder, and its evaluation by the eval runner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tdm_r1.train.methods.base import GEN

if TYPE_CHECKING:
    from tdm_r1.train.trainer import Trainer


def export_generator(trainer: Trainer, directory: Path) -> Path:
    """Save the EMA generator (peft LoRA folder) and a ``preset.json`` next to it; returns ``directory``."""
    from tdm_r1.models.preset import lora_preset, save_preset_file

    cfg, base = trainer.cfg, trainer.preset
    with trainer.ema.swapped():
        lora_dir = trainer.adapter.save_role(GEN, directory / "lora")
    preset = lora_preset(
        cfg.register_as or cfg.name,
        base,
        lora_dir,
        lora_scale=None,  # the trainer folded the starting LoRA's scale into the weights
        kind="distilled" if cfg.distill else "rl",
        sources=f"tdmbench {'distill' if cfg.distill else 'train'} run {trainer.run_dir.name}",
        steps=trainer.infer_steps,
        guidance=trainer.method.rollout_guidance,
        solver=trainer.schedule.solver,
        spacing=cfg.model.spacing or trainer.adapter.sampling.spacing,
        few_step_base=None if cfg.distill else base.name,
        baseline=(cfg.model.teacher or base.baseline) if not cfg.distill else base.name,
        in_domain=tuple(cfg.rewards),
        benchmarks=base.benchmarks,
    )
    save_preset_file(preset, directory / "preset.json")
    return directory


def evaluate_export(folder: Path, trainer: Trainer, out: Path) -> Path:
    """Evaluate an exported model folder on the run's ``eval_benchmarks`` into ``out/results``."""
    from tdm_r1.eval.runner import evaluate
    from tdm_r1.models.preset import load_preset_file

    cfg = trainer.cfg
    evaluate(
        load_preset_file(folder / "preset.json"),  # a preset object: nothing is registered
        cfg.eval_benchmarks,
        limit=cfg.eval_limit,
        batch_size=cfg.eval_batch_size,
        device=str(trainer.device),
        results_root=out / "results",
        progress=False,
    )
    return out
