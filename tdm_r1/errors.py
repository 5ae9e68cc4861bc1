"""Exception types. Every error says what was wrong, what is valid, and how to fix it."""

from __future__ import annotations


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
