"""Reward and loss curves of a training run (matplotlib PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path | None:
    """Reward mean (with per-task means when present), losses and the surrogate's health per epoch.

    Health (TDM-R1 runs): the spread of the group weights (0 = the surrogate tells no group from
    another), the PPO-clip fraction, and the share of groups whose rewards are all equal (they
    carry no preference signal).
    """
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    reward_keys = [
        k
        for k in history[-1]
        if k == "reward_mean" or k.startswith("reward_") and k not in ("reward_std", "reward_max")
    ]
    loss_keys = [
        k for k in ("gen_kl", "gen_cfg", "gen_rl", "fake_loss", "surrogate_loss") if k in history[-1]
    ]
    health_keys = [
        k
        for k in ("surrogate_group_weight_std", "surrogate_clipped", "zero_std_group_share")
        if k in history[-1]
    ]
    fig, axes = plt.subplots(1, 3 if health_keys else 2, figsize=(16 if health_keys else 11, 4))
    for key in reward_keys:
        ys = [h.get(key, float("nan")) for h in history]
        axes[0].plot(epochs, ys, label=key, lw=2 if key == "reward_mean" else 1)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("reward (rollouts)")
    if reward_keys:
        axes[0].legend(fontsize=7)
    for key in loss_keys:
        axes[1].plot(epochs, [h.get(key, float("nan")) for h in history], label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_yscale("log")
    if loss_keys:
        axes[1].legend(fontsize=7)
    for key in health_keys:
        axes[2].plot(epochs, [h.get(key, float("nan")) for h in history], label=key)
    if health_keys:
        axes[2].set_xlabel("epoch")
        axes[2].set_title("surrogate health", fontsize=9)
        axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
