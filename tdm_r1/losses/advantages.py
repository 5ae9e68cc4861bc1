"""Per-prompt group advantages of a batch of rewards (GRPO / DGPO style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Advantages:
    """Result of :func:`group_advantages`.

    Attributes:
        values: (N,) advantages, clipped; 0 for NaN rewards and zero-variance groups.
        group_mean: (N,) the mean reward of each sample's group.
        zero_std_groups: number of groups whose rewards are all equal (they teach nothing).
        groups: number of groups.
        nan_rewards: number of NaN rewards (excluded from the statistics).
    """

    values: torch.Tensor
    group_mean: torch.Tensor
    zero_std_groups: int
    groups: int
    nan_rewards: int


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    std: str = "group",
    clip: float = 5.0,
    eps: float = 1e-4,
) -> Advantages:
    """``A_i = (r_i - mean_{g(i)}) / (std + eps)``, clipped to ``[-clip, clip]``.

    Args:
        rewards: (N,) float; NaN = not scored (excluded, advantage 0).
        group_ids: (N,) int, samples of one prompt share an id.
        std: "group" (std within each group) or "global" (std over all finite rewards, the
            Flow-GRPO / TDM-R1 ``global_std`` option).
        clip: advantage clip (5 in the public recipes).
        eps: added to the std.

    A group whose rewards are all equal gets advantage 0 (and is counted in
    ``zero_std_groups``), whichever ``std`` is used.
    """
    if rewards.ndim != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must be (N,), got {tuple(rewards.shape)}, {tuple(group_ids.shape)}"
        )
    if std not in ("group", "global"):
        raise ValueError(f"std must be 'group' or 'global', got {std!r}")
    r = rewards.detach().double()
    finite = torch.isfinite(r)
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = len(uniq)
    zeros = torch.zeros(n_groups, dtype=torch.float64)
    count = zeros.scatter_add(0, inv, finite.double())
    total = zeros.scatter_add(0, inv, torch.where(finite, r, 0.0))
    mean = total / count.clamp_min(1)
    dev = torch.where(finite, r - mean[inv], 0.0)
    var = zeros.scatter_add(0, inv, dev**2) / count.clamp_min(1)  # population std, as numpy's np.std
    group_std = var.sqrt()
    flat = (group_std <= 1e-12) | (count < 2)
    if std == "group":
        scale = group_std[inv]
    else:
        scale = r[finite].std(unbiased=False).expand_as(r) if int(finite.sum()) > 1 else torch.ones_like(r)
    adv = dev / (scale + eps)
    adv = torch.where(flat[inv] | ~finite, 0.0, adv).clamp(-clip, clip)
    return Advantages(
        values=adv.float(),
        group_mean=mean[inv].float(),
        zero_std_groups=int(flat.sum()),
        groups=n_groups,
        nan_rewards=int((~finite).sum()),
    )
