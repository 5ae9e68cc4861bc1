"""Client ids of labels: what makes a retried request store its label once, per rater.

A client (the page, the simulated rater, an import) may name each decision with an id of up to
:data:`MAX_CLIENT_ID` characters of ``[A-Za-z0-9_.:-]``. Ids belong to their rater: the database
keys a label by ``<client id>@<rater>`` (``scoped``), so another rater posting the same id (a
guessed ``sim:...`` id, say) stores his own label and never sees or blocks the first rater's. A
reused id is a retry only when it carries the same decision; one with another image, group or
label is refused (:class:`~tdm_r1.label.records.ClientIdConflictError`, HTTP 409) instead of
being reported as stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tdm_r1.errors import excerpt
from tdm_r1.label.records import ClientIdConflictError, LabelDBError, LabelRow

MAX_CLIENT_ID = 128
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)


def check_client_id(client_id: str) -> str:
    """``client_id`` when it has the format above, else :class:`LabelDBError`."""
    if not isinstance(client_id, str) or not client_id or len(client_id) > MAX_CLIENT_ID:
        raise LabelDBError(f"a client_id has 1 to {MAX_CLIENT_ID} characters, got {excerpt(client_id)!r}")
    if not _CLIENT_ID.match(client_id):
        raise LabelDBError(f"a client_id uses only letters, digits and _ . : -, got {excerpt(client_id)!r}")
    return client_id


def scoped(rater: str, client_id: str) -> str:
    """The stored key of ``rater``'s ``client_id`` (injective: a client id holds no ``@``)."""
    return f"{check_client_id(client_id)}@{rater}"


def replay(
    old: Mapping[str, Any], rater: str, image_id: str, label: int | None, group_id: str | None, client_id: str
) -> LabelRow:
    """The stored row of a retried request (nothing written), or a conflict if it says otherwise."""
    if old["rater"] != rater:  # cannot happen with scoped keys; never hand out another rater's row
        raise ClientIdConflictError(f"client_id {client_id!r} belongs to another rater: use a new id")
    sent = (image_id, label, group_id)
    if (old["image_id"], old["label"], old["group_id"]) != sent:
        raise ClientIdConflictError(
            f"client_id {client_id!r} was already used for another label (image {old['image_id'][:12]}..., "
            f"label {old['label']!r}): each label needs a new client_id; nothing was written"
        )
    return LabelRow(old["id"], old["image_id"], old["rater"], old["label"], old["supersedes"], False)
