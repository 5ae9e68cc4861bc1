"""Helpers for the label app tests: distinct small PNGs, a database with groups, a logged-in client."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def png(seed: int, size: int = 16) -> bytes:
    """A distinct random RGB PNG per seed."""
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_db(path: Path, groups: dict[str, int], *, run: str | None = None, start: int = 0) -> Any:
    """A label database with one group per prompt (prompt -> number of images)."""
    from tdm_r1.label.db import LabelDB

    db = LabelDB(path, run=run)
    seed = start
    for prompt, n in groups.items():
        db.add_group(prompt, [png(seed + k) for k in range(n)], metadata={"tag": "test"})
        seed += n
    return db


def page_token(html: str) -> str:
    match = re.search(r'name="label-token" content="([^"]+)"', html)
    assert match, "the page carries no token"
    return match.group(1)


def login(client: Any, name: str = "ann") -> str:
    """Log ``client`` in as ``name``; returns the page token."""
    token = page_token(client.get("/").text)
    resp = client.post("/login", data={"name": name, "token": token}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    return token
