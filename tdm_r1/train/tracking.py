"""What a run records: ``metrics.jsonl``, TensorBoard / W&B scalars, ``run.json``, and the progress bar's readings."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

from tdm_r1.config import to_dict
from tdm_r1.train.config import TrainConfig

log = logging.getLogger(__name__)

#: Metrics shown in the one-line epoch log.
SHOWN = ("reward_mean", "zero_std_groups", "gen_kl", "gen_rl", "fake_loss")


class RunLog:
    """The run's trackers; only the main process writes (others keep the history only)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, main: bool) -> None:
        self.cfg, self.run_dir, self.main = cfg, run_dir, main
        self.tb = self.wandb = None
        if not main:
            return
        if "tensorboard" in cfg.trackers and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in cfg.trackers and importlib.util.find_spec("wandb") is not None:
            import wandb

            self.wandb = wandb.init(project="tdmbench", name=cfg.name, config=to_dict(cfg))

    def epoch(self, metrics: dict[str, Any]) -> None:
        """Append one epoch's metrics to ``metrics.jsonl`` and the trackers, and log a line."""
        if not self.main:
            return
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if self.tb is not None:
            for key, val in metrics.items():
                if isinstance(val, int | float) and math.isfinite(val):
                    self.tb.add_scalar(key, val, metrics["epoch"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=metrics["epoch"])
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in SHOWN if k in metrics)
        log.info("epoch %d: %s (%.1f s)", metrics["epoch"], shown, metrics["time_epoch_s"])

    def summary(self, epochs: int, updates: dict[str, int], seconds: float) -> None:
        """``<run>/run.json``: how far the run went and what stopped it (the safety cap is reported)."""
        cfg = self.cfg
        stopped_by = "max_epochs" if epochs >= cfg.max_epochs else "max_minutes"
        if stopped_by == "max_minutes":
            log.warning(
                "%s stopped by the max_minutes=%g safety cap after %d of %d epochs: this model depends on "
                "the machine's speed; rerun with more time or fewer max_epochs for a reproducible result",
                cfg.name,
                cfg.max_minutes,
                epochs,
                cfg.max_epochs,
            )
        if self.main:
            summary = {
                "epochs": epochs,
                "max_epochs": cfg.max_epochs,
                "stopped_by": stopped_by,
                "samples": epochs * cfg.samples_per_epoch,
                "updates": dict(updates),
                "seconds_this_session": round(seconds, 1),
            }
            (self.run_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


#: Epochs in the progress bar's running mean of the train reward.
RUNNING_MEAN_EPOCHS = 10


def progress_postfix(history: list[dict[str, Any]], window: int = RUNNING_MEAN_EPOCHS) -> dict[str, str]:
    """The progress bar's readings: this epoch's train reward beside its mean over the last
    ``window`` epochs (each epoch draws other prompts, so one epoch's reward moves with the prompt
    mix more than with learning), and the generator loss."""
    last = history[-1]
    out: dict[str, str] = {}
    if "reward_mean" in last:
        recent = [h["reward_mean"] for h in history[-window:] if h.get("reward_mean") == h.get("reward_mean")]
        out["reward"] = f"{last['reward_mean']:.3f}"
        if recent:
            out[f"mean{len(recent)}"] = f"{sum(recent) / len(recent):.3f}"
    if "gen_loss" in last:
        out["gen_loss"] = f"{last['gen_loss']:.3g}"
    return out
