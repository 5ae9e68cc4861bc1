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


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Make sure ``path`` can be written before any work is done: not a folder, its folder
    creatable and writable. Raises ``ConfigError`` / ``OSError`` (both shown as one line)."""
    import tempfile

    from tdm_r1.errors import ConfigError

    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder: give a file path (e.g. {path / 'scores.csv'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
        pass  # PermissionError / ENOSPC here, in a second, instead of after the work
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Like :func:`check_output_file` for a folder: not a file; if it exists, writable."""
    import os
    import tempfile

    from tdm_r1.errors import ConfigError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file: give a folder path")
    probe = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: {probe} is not writable; choose a folder you can write to")
    # os.access says yes to root everywhere, and /proc or a read-only mount still refuse: make and
    # remove a folder there now, rather than after the model has loaded
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".tdmbench-probe-"))
    except OSError as exc:
        raise ConfigError(
            f"{what} {path}: cannot create folders in {probe} ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from exc
    return path
