"""How numbers read in every output (Markdown, HTML report, figures, arena tables): decimals, signs,
CIs, NFE, the "higher is better" arrow and the verdict of a paired delta."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def fmt(value: Any, *, signed: bool = False, as_published: bool = False) -> str:
    """3 decimals (2 from 10 up); ``as_published`` keeps a reported number's own digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    v = float(value)
    if as_published:
        return f"{v:g}"
    digits = 2 if abs(v) >= 10 else 3
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_nfe(value: Any) -> str:
    return "" if pd.isna(value) else str(int(value))


def fmt_ci(low: float, high: float) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f"[{fmt(low, signed=True)}, {fmt(high, signed=True)}]"


def verdict(significant: Any, delta: float, higher_is_better: bool, reason: str = "") -> str:
    """``significantly better`` / ``significantly worse`` (the 95% CI excludes 0), ``not
    significant`` (the CI includes 0: no claim either way), or ``unpaired: <reason>`` (no CI)."""
    if significant is None or pd.isna(significant):
        return f"unpaired: {reason}" if reason else "no CI"
    if not bool(significant):
        return "not significant"
    return "**significantly better**" if (delta > 0) == higher_is_better else "**significantly worse**"
