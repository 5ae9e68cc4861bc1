"""What the label store holds and answers with: its errors, a stored label row, a like rate,
and the content ids of images and groups."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from tdm_r1.errors import TdmError


class LabelDBError(TdmError):
    """The label database cannot be used as asked (the message says why and what to do)."""


class ReadOnlyError(LabelDBError):
    pass


class LockedError(LabelDBError):
    pass


class UnknownImageError(LabelDBError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RunMismatchError(LabelDBError):
    pass


class ClientIdConflictError(LabelDBError):
    """A client id already stored with another decision (the app answers 409)."""


@dataclass(frozen=True)
class LabelRow:
    id: int
    image_id: str
    rater: str
    label: int | None
    supersedes: int | None
    stored: bool  # False when the client_id was already stored (nothing written)


@dataclass(frozen=True)
class Rate:
    """Like rate of one image over its raters' current labels."""

    rate: float  # mean of the labels (NaN without any)
    raters: int
    likes: int

    @property
    def disagreement(self) -> float:
        """Share of raters against the majority: 0 = unanimous, 0.5 = split."""
        return min(self.likes, self.raters - self.likes) / self.raters if self.raters else float("nan")


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def group_id(prompt: str, image_ids: Iterable[str]) -> str:
    return hashlib.sha256((prompt + "\0" + ",".join(sorted(image_ids))).encode()).hexdigest()[:32]


def image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    raise LabelDBError("only PNG and JPEG images can be registered (the bytes are neither)")
