"""Reading the tables users hand to tdmbench (result CSVs, label exports) with errors that name
the file: pandas' own ``ParserError`` / ``EmptyDataError`` say neither which file nor what to do.

``pandas`` is imported inside the functions (this module is in the foundation layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tdm_r1.errors import UnreadableFileError, excerpt


def _problem(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "EmptyDataError":
        return "it is empty"
    first = (str(exc).strip().splitlines() or [name])[0]
    if isinstance(exc, UnicodeDecodeError):
        return f"it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    return f"it is not a readable table ({excerpt(first, 160)})"


def read_csv(path: str | Path, what: str = "CSV file", **kwargs: Any) -> Any:
    """``pandas.read_csv(path, **kwargs)``; garbage, empty or cut files give
    :class:`UnreadableFileError` naming ``path`` and the problem."""
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except ValueError as exc:  # ParserError, EmptyDataError, UnicodeDecodeError, bad dtypes
        raise UnreadableFileError(f"{what} {path}: {_problem(exc)}: regenerate or fix the file") from exc


def read_parquet(path: str | Path, what: str = "parquet file", **kwargs: Any) -> Any:
    """``pandas.read_parquet`` with the same one-line errors as :func:`read_csv`."""
    import pandas as pd

    try:
        return pd.read_parquet(path, **kwargs)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(exc, FileNotFoundError):
            raise
        raise UnreadableFileError(f"{what} {path}: {_problem(exc)}: regenerate or fix the file") from exc


def check_complete(path: str | Path, what: str = "CSV file") -> None:
    """Refuse a file cut short: tdmbench writes every CSV whole, ending in a newline, so a file that
    is empty or ends mid-line was truncated (a copy or a disk that filled up)."""
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        raise UnreadableFileError(f"{what} {p}: it is empty: regenerate or fix the file")
    with p.open("rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            raise UnreadableFileError(
                f"{what} {p}: it ends in the middle of a line (cut short?): regenerate or restore the file"
            )
