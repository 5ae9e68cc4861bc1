"""The statistics behind a TDM-R1 run's instruments (:mod:`tdm_r1.train.diagnostics`), pure tensor
functions with hand-computed tests: ranking quality within groups (pairwise accuracy, Spearman),
the paired per-prompt reward delta, and the generator's per-term gradient directions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch

# ------------------------------------------------------------------------------ pure ranking math


def _valid_groups(
    scores: torch.Tensor, rewards: torch.Tensor, groups: torch.Tensor
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per group: (scores, rewards) float64 of its samples with a finite reward and score."""
    s, r, g = scores.double().cpu(), rewards.double().cpu(), groups.cpu()
    ok = torch.isfinite(s) & torch.isfinite(r)
    for gid in torch.unique(g[ok]).tolist():
        sel = ok & (g == gid)
        yield s[sel], r[sel]


def pairwise_accuracy(scores: torch.Tensor, rewards: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean over groups of the share of a group's pairs that ``scores`` order as ``rewards`` do.

    Only pairs with different rewards count; a tie in score counts half. Groups without such a
    pair are left out; NaN when no group has one. Shapes: all (N,); ``groups`` integer group ids.
    """
    accs = []
    for s, r in _valid_groups(scores, rewards, groups):
        ds = s[:, None] - s[None, :]  # (n, n)
        dr = r[:, None] - r[None, :]
        upper = torch.triu(torch.ones_like(dr, dtype=torch.bool), diagonal=1) & (dr != 0)
        if not bool(upper.any()):
            continue
        agree = torch.where(ds == 0, 0.5, ((ds * dr) > 0).double())
        accs.append(float(agree[upper].mean()))
    return sum(accs) / len(accs) if accs else float("nan")


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """(n,) float64 ranks 1..n of ``x`` (n,), tied values sharing their mean rank."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for v in torch.unique(x):
        tied = x == v
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(scores: torch.Tensor, rewards: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean over groups of the Spearman correlation of ``scores`` with ``rewards`` (ties: mean ranks).

    A group whose scores or rewards are all equal (correlation undefined) is left out; NaN when
    every group is. Shapes: all (N,).
    """
    rhos = []
    for s, r in _valid_groups(scores, rewards, groups):
        if len(s) < 2:
            continue
        a, b = average_ranks(s), average_ranks(r)
        a, b = a - a.mean(), b - b.mean()
        den = float(a.norm() * b.norm())
        if den > 0:
            rhos.append(float((a * b).sum()) / den)
    return sum(rhos) / len(rhos) if rhos else float("nan")


def paired_group_delta(
    now: torch.Tensor, base: torch.Tensor, groups: torch.Tensor, prefix: str
) -> dict[str, float]:
    """Mean of ``now - base`` (all (N,)) and a 95% t-interval over the groups' mean differences.

    Samples with a non-finite value on either side are left out; NaN bounds with fewer than 2 groups.
    """
    from tdm_r1.eval.aggregate import mean_ci

    d = (now.double() - base.double()).cpu()
    ok = torch.isfinite(d)
    g = groups.cpu()[ok]
    s = mean_ci([float(d[ok][g == k].mean()) for k in torch.unique(g).tolist()])
    mean = float(d[ok].mean()) if bool(ok.any()) else float("nan")
    return {prefix: mean, f"{prefix}_lo": float(s.ci_low), f"{prefix}_hi": float(s.ci_high)}


# ---------------------------------------------------------------------------- gradient directions


def term_gradients(
    losses: Mapping[str, torch.Tensor | None], params: Sequence[torch.Tensor]
) -> dict[str, list[torch.Tensor] | None]:
    """Gradient of each loss w.r.t. ``params`` (one tensor per parameter), the graph kept.

    ``torch.autograd.grad`` returns the gradients without accumulating into ``.grad``, and
    ``retain_graph`` leaves the graph for the real backward, so the training gradient is unchanged.
    A loss of None (a term that is off) gives None.
    """
    out: dict[str, list[torch.Tensor] | None] = {}
    for name, loss in losses.items():
        if loss is None:
            out[name] = None
            continue
        grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        out[name] = [
            torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, params, strict=True)
        ]
    return out


def _dot(a: list[torch.Tensor] | None, b: list[torch.Tensor] | None) -> float:
    if a is None or b is None:
        return 0.0
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def direction_stats(
    grads: Mapping[str, list[torch.Tensor] | None], prefix: str = "gdir", base: str = "kl"
) -> dict[str, float]:
    """Norms of the directions, of their sum, their ratios to ``base`` and their pairwise cosines.

    Keys: ``{prefix}_{name}``, ``{prefix}_total``, ``{prefix}_{name}_over_{base}``,
    ``{prefix}_cos_{a}_{b}``. A None direction (term off) has norm 0; a ratio or cosine with a
    zero norm is NaN.
    """
    names = list(grads)
    gram = {(a, b): _dot(grads[a], grads[b]) for i, a in enumerate(names) for b in names[i:]}
    norm = {a: math.sqrt(max(gram[a, a], 0.0)) for a in names}
    total = sum(gram[a, b] * (1 if a == b else 2) for (a, b) in gram)
    out = {f"{prefix}_{a}": norm[a] for a in names}
    out[f"{prefix}_total"] = math.sqrt(max(total, 0.0))
    for a in names:
        if a != base and base in norm:
            out[f"{prefix}_{a}_over_{base}"] = _ratio(norm[a], norm[base])
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"{prefix}_cos_{a}_{b}"] = _ratio(gram[a, b], norm[a] * norm[b])
    return out
