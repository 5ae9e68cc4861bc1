"""Reward and loss curves of a training run (matplotlib PNG)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The instruments' series (``tdm_r1.train.diagnostics``), drawn in a second row when present.
_STEP = re.compile(r"reward_step\d+$")
_SUR = re.compile(r"sur_(pairacc|spearman)_j\d+$")
#: The same ranking with the score averaged over several noise queries (preferred when logged).
_SUR_Q = re.compile(r"sur_(pairacc|spearman)_q_j\d+$")
_GDIR = ("gdir_kl", "gdir_cfg", "gdir_rl", "gdir_total")
_GDIR_RATIO = ("gdir_rl_over_kl", "gdir_cfg_over_kl")


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The (epochs, values) where ``key`` was logged with a finite number (instruments may be sparse)."""
    pts = [
        (h["epoch"], float(h[key]))
        for h in history
        if isinstance(h.get(key), int | float) and math.isfinite(h[key])
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def _keys(history: Sequence[dict[str, Any]], match: Any) -> list[str]:
    """Keys of any epoch that ``match`` accepts, in first-seen order."""
    seen: dict[str, None] = {}
    for h in history:
        for k in h:
            if match(k):
                seen.setdefault(k, None)
    return list(seen)


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path | None:
    """Reward mean (with per-task means when present), losses and the surrogate's health per epoch.

    Health (TDM-R1 runs): the spread of the group weights (0 = the surrogate tells no group from
    another), the PPO-clip fraction, and the share of groups whose rewards are all equal (they
    carry no preference signal). The first panel also shows the EMA generator's held-out rewards
    (``heldout_*``, on the scheduled evaluations' fixed prompts): the learning curve to trust,
    where the train reward moves with each epoch's prompt mix. A second row, when the run logged
    instruments (``method.diagnostics_every``): the surrogate's ranking of fresh groups per
    boundary, the norms of the generator's three update directions, and the reward per rollout step.
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
        if k == "reward_mean"
        or k.startswith("reward_")
        and k not in ("reward_std", "reward_max")
        and not _STEP.match(k)
    ]
    heldout_keys = _keys(history, lambda k: k.startswith("heldout_"))
    loss_keys = [
        k for k in ("gen_kl", "gen_cfg", "gen_rl", "fake_loss", "surrogate_loss") if k in history[-1]
    ]
    health_keys = [
        k
        for k in ("surrogate_group_weight_std", "surrogate_clipped", "zero_std_group_share")
        if k in history[-1]
    ]
    sur_keys = _keys(history, _SUR_Q.match) or _keys(history, _SUR.match)
    gdir_keys = [k for k in _GDIR if _series(history, k)[0]]
    step_keys = sorted(_keys(history, _STEP.match), key=lambda k: int(k.removeprefix("reward_step")))
    diag = bool(sur_keys or gdir_keys or step_keys)
    cols = 3 if health_keys or diag else 2
    fig, grid = plt.subplots(2 if diag else 1, cols, figsize=(5.3 * cols, 8 if diag else 4), squeeze=False)
    axes = grid[0]
    for key in reward_keys:
        ys = [h.get(key, float("nan")) for h in history]
        axes[0].plot(epochs, ys, label=key, lw=2 if key == "reward_mean" else 1)
    for key in heldout_keys:
        axes[0].plot(*_series(history, key), "s-", label=f"{key} (EMA)", lw=2, ms=5)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("reward (rollouts; held-out: EMA)")
    if reward_keys or heldout_keys:
        axes[0].legend(fontsize=7, loc="lower left")
    _start_delta(axes[0], history)
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
    elif cols == 3:
        axes[2].axis("off")
    if diag:
        _instrument_row(grid[1], history, sur_keys, gdir_keys, step_keys)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _start_delta(ax: Any, history: Sequence[dict[str, Any]]) -> None:
    """``start_delta`` (reward minus the start weights' on the same prompts and noises) with its
    95% band, on a right axis: the paired learning curve of the instruments."""
    xs, ys = _series(history, "start_delta")
    if not xs:
        return
    twin = ax.twinx()
    lo = dict(zip(*_series(history, "start_delta_lo"), strict=True))
    hi = dict(zip(*_series(history, "start_delta_hi"), strict=True))
    twin.plot(xs, ys, "k.-", lw=1, ms=4, label="start_delta (paired, right axis)")
    twin.fill_between(
        xs,
        [lo.get(x, y) for x, y in zip(xs, ys, strict=True)],
        [hi.get(x, y) for x, y in zip(xs, ys, strict=True)],
        color="black",
        alpha=0.12,
    )
    twin.axhline(0.0, color="black", lw=0.6, ls=":")
    twin.set_ylabel("reward − start weights' (same prompts, noises)", fontsize=8)
    twin.legend(fontsize=7, loc="upper right")


def _instrument_row(
    axes: Sequence[Any],
    history: Sequence[dict[str, Any]],
    sur_keys: list[str],
    gdir_keys: list[str],
    step_keys: list[str],
) -> None:
    """The instruments' panels: surrogate ranking, update-direction norms, reward per step."""
    for key in sur_keys:  # one colour per boundary: accuracy solid, Spearman dashed
        j = int(key.rpartition("_j")[2])
        style = "o-" if "pairacc" in key else "^--"
        axes[0].plot(*_series(history, key), style, color=f"C{j % 10}", label=key.removeprefix("sur_"), ms=3)
    axes[0].axhline(0.5, color="grey", lw=0.5)
    axes[0].axhline(0.0, color="grey", lw=0.5)
    queries = "mean of noise queries" if any("_q_j" in k for k in sur_keys) else "one query"
    axes[0].set_title(f"surrogate vs true reward, fresh groups, {queries} (chance 0.5 / 0)", fontsize=9)
    for key in gdir_keys:  # log scale: a zero norm (a term that is off, the KL at step 0) is left out
        pts = [(x, y) for x, y in zip(*_series(history, key), strict=True) if y > 0]
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key.removeprefix("gdir_"), ms=3)
    if gdir_keys:
        axes[1].set_yscale("log")
        twin = axes[1].twinx()
        for key, style in zip(_GDIR_RATIO, ("x:", "+:"), strict=True):
            xs, ys = _series(history, key)
            if xs:
                twin.plot(
                    xs, ys, style, label=key.removeprefix("gdir_"), color="black" if "rl" in key else "grey"
                )
        twin.set_ylabel("ratio", fontsize=8)
        twin.legend(fontsize=7, loc="lower right")
    axes[1].set_title("generator update directions (grad norm, weighted)", fontsize=9)
    for key in step_keys:
        axes[2].plot(*_series(history, key), "o-", label=key.removeprefix("reward_"), ms=3)
    xs, ys = _series(history, "fresh_reward_mean")
    if xs:
        axes[2].plot(xs, ys, "k+", label="fresh groups (after update)")
    axes[2].set_title("train reward of the x0 prediction per rollout step", fontsize=9)
    for ax, keys in zip(axes, (sur_keys, gdir_keys, step_keys), strict=True):
        ax.set_xlabel("epoch")
        if keys:
            ax.legend(fontsize=7)
