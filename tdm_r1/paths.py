"""Where tdmbench keeps caches and downloaded data (never inside the installed package)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$TDMBENCH_CACHE`` or ``~/.cache/tdmbench``."""
    return Path(os.environ.get("TDMBENCH_CACHE", Path.home() / ".cache" / "tdmbench")).expanduser()


def data_dir() -> Path:
    """``$TDMBENCH_DATA_DIR`` or ``<cache>/data``: benchmark prompt files fetched by sha256."""
    env = os.environ.get("TDMBENCH_DATA_DIR")
    return Path(env).expanduser() if env else cache_dir() / "data"


def results_dir() -> Path:
    """``$TDMBENCH_RESULTS`` or ``./results``."""
    return Path(os.environ.get("TDMBENCH_RESULTS", "results")).expanduser()


def runs_dir() -> Path:
    """``$TDMBENCH_RUNS`` or ``./runs``: training runs."""
    return Path(os.environ.get("TDMBENCH_RUNS", "runs")).expanduser()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
