"""Exception types. Every error says what was wrong, what is valid, and how to fix it."""

from __future__ import annotations

import os
from pathlib import Path


class TdmError(Exception):
    """Base class of tdmbench's own errors (shown to CLI users without a traceback)."""


class ConfigError(TdmError, ValueError):
    """A configuration value or key is invalid."""


class UnknownNameError(TdmError, KeyError):
    """A registry lookup failed; the message lists close matches and every valid name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingExtraError(TdmError, ImportError):
    """An optional dependency is not installed; the message names the exact install command."""


class MissingWeightsError(TdmError, FileNotFoundError):
    """Model weights are neither local nor downloadable; the message says how to provide them."""


class WeightHashError(TdmError, ValueError):
    """A weight file's sha256 differs from its published hash; nothing is scored with it."""


class MissingDataError(TdmError, FileNotFoundError):
    """A benchmark data file is missing; the message names ``tdmbench data fetch``."""


class ShapeError(TdmError, ValueError):
    """A tensor has the wrong shape, dtype or range."""


class UnreadableFileError(TdmError, OSError):
    """A user's file cannot be read as what it should be (not UTF-8, cut short, not an image...)."""


class WaitTimeoutError(TdmError, TimeoutError):
    """A bounded wait ran out; the message names what was awaited, for how long, and what to do."""


#: Characters of a value quoted in an error message (a 50 MB value must not become a 50 MB line).
EXCERPT_CHARS = 80
#: Longest one-line error message shown; anything longer is cut (with how much was left out).
MAX_MESSAGE_CHARS = 2000


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``value`` as text (a string itself, anything else its ``repr``), cut to about ``limit``
    characters. Nested containers are summarised level by level (``reprlib``), so that even a
    YAML alias bomb's shared lists are never expanded."""
    import reprlib

    if isinstance(value, str):
        text = value
    else:
        short = reprlib.Repr()
        short.maxlevel, short.maxlist, short.maxtuple, short.maxdict, short.maxset = 3, 6, 6, 6, 6
        short.maxstring, short.maxother, short.maxlong = limit, limit, limit
        text = short.repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """The UTF-8 text of ``path``; other encodings and folders give a one-line error naming the file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a folder, not a file: give the path of the file itself")
    if not p.exists():
        if is_symlink_loop(p):
            raise ConfigError(f"{what} {p} is a symlink loop (it points back to itself): fix the link")
        raise ConfigError(f"{what} {p} does not exist")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise UnreadableFileError(
            f"{p}:{line}: {what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}): save it as UTF-8"
        ) from exc


def is_symlink_loop(path: str | os.PathLike[str]) -> bool:
    """Whether resolving ``path`` loops (``a -> b -> a``): ``exists()`` just says False for it."""
    import errno

    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user caused (bad file, path, YAML, image), else None.

    The CLI shows this line instead of a traceback; anything returning None is a bug and keeps its
    traceback. ``TdmError`` messages are already written for users. Messages are cut to
    :data:`MAX_MESSAGE_CHARS`.
    """
    message = _user_error_message(exc)
    if message is not None and len(message) > MAX_MESSAGE_CHARS:
        cut = len(message) - MAX_MESSAGE_CHARS
        message = f"{message[:MAX_MESSAGE_CHARS]}... ({cut} more characters)"
    return message


def _user_error_message(exc: BaseException) -> str | None:
    import errno

    if isinstance(exc, TdmError):
        return str(exc)
    try:
        import yaml

        if isinstance(exc, yaml.YAMLError):
            return yaml_error_message(exc)
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        pass
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8"
    if type(exc).__name__ == "SafetensorError":  # a weight file not caught by tdm_r1.weights_check
        return f"a .safetensors weight file is damaged or cut short ({excerpt(str(exc))}): copy it again"
    if type(exc).__name__ == "DecompressionBombError":
        return f"{exc}: the image is too large to read safely"
    if isinstance(exc, OSError):
        where = exc.filename or ""
        if exc.filename2:
            where = f"{where} -> {exc.filename2}"
        code = exc.errno
        if code == errno.ENOSPC:
            return f"no space left on device writing {where or 'a file'}: free space or choose another folder"
        if code in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = "read-only file system" if code == errno.EROFS else "permission denied"
            return f"{where}: {why}: choose a folder you can write to (or fix its permissions)"
        if code == errno.EISDIR:
            return f"{where} is a folder; give a file path"
        if code == errno.ENOTDIR:
            return f"{where}: a part of this path is a file, not a folder"
        if code == errno.ELOOP:
            return f"{where} is a symlink loop (it points back to itself): fix the link"
        if code == errno.ENOENT:
            return f"{where} does not exist"
        if exc.strerror:
            return f"{where}: {exc.strerror}" if where else exc.strerror
        return f"{type(exc).__name__}: {exc}"
    return None


def yaml_error_message(exc: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """``file:line: what`` for a YAML syntax error or a refused tag (``!!python/...``)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    name = str(path) if path is not None else (getattr(mark, "name", None) or "<yaml>")
    where = f"{name}:{mark.line + 1}" if mark is not None else name
    if "constructor" in problem or "tag" in problem:
        return f"{where}: {problem}: tags such as !!python/... are not allowed; use plain YAML values"
    return f"{where}: invalid YAML ({problem}): fix the syntax"
