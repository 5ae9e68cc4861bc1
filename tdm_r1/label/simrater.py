"""A rater that uses the labelling app over HTTP, as a person's browser does.

:class:`HttpRater` loads the start page (for the page token), logs in with its name, polls the
pending groups, downloads each image by id and posts one label per image. What it likes is
decided by a callable; :class:`SimDecider` is the ``likes-sim`` one: a like with probability
given by an underlying reward, shifted by a rater bias and flipped with probability ``noise``.
Every draw is seeded by (seed, rater, image), so a rerun gives the same labels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tdm_r1.deps import require

log = logging.getLogger(__name__)

#: decide(group json, image bytes) -> one like (True) / dislike (False) per image
Decide = Callable[[Mapping[str, Any], list[bytes]], list[bool]]


class HttpRater:
    """One named rater talking to the app at ``url`` (a daemon thread with :meth:`start`)."""

    def __init__(self, url: str, name: str, decide: Decide, *, poll: float = 0.2) -> None:
        httpx = require("httpx", purpose="the simulated rater")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
        self.name, self.decide, self.poll = name, decide, poll
        self.client = httpx.Client(base_url=url, trust_env=False, timeout=30.0)
        self.token = ""
        self.posted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def login(self) -> None:
        page = self.client.get("/")
        page.raise_for_status()
        match = re.search(r'name="label-token" content="([^"]+)"', page.text)
        if not match:
            raise RuntimeError("the labelling page has no token")
        self.token = match.group(1)
        resp = self.client.post("/login", data={"name": self.name, "token": self.token})
        if resp.status_code >= 400:
            raise RuntimeError(f"login failed: {resp.status_code} {resp.text[:200]}")

    def _check(self, resp: Any) -> Any:
        if resp.status_code >= 400:
            try:
                reason = resp.json().get("error", resp.text)
            except ValueError:
                reason = resp.text[:200]
            raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {reason}")
        return resp

    def rate_pending(self) -> int:
        """Label every pending group once; returns the number of labels posted."""
        if not self.token:
            self.login()
        posted = 0
        for g in self._check(self.client.get("/api/pending")).json()["pending"]:
            group = self._check(self.client.get(f"/api/group/{g['id']}")).json()
            todo = [im for im in group["images"] if im["label"] is None]
            if not todo:
                continue
            data = [self._check(self.client.get(f"/image/{im['id']}")).content for im in todo]
            for im, like in zip(todo, self.decide(group, data), strict=True):
                body = {
                    "image_id": im["id"],
                    "group_id": group["id"],
                    "label": "like" if like else "dislike",
                    # ids are the rater's own (the app scopes them), so they need not hold the name
                    "client_id": f"sim:{group['id']}:{im['id']}",
                }
                self._check(self.client.post("/api/label", json=body, headers={"X-Label-Token": self.token}))
                posted += 1
        self.posted += posted
        return posted

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.rate_pending():
                    self._stop.wait(self.poll)
        except BaseException as exc:  # noqa: BLE001 (kept for the owner, which reports it)
            self.error = exc
            log.error("simulated rater %s stopped: %s", self.name, exc)

    def start(self) -> HttpRater:
        self._thread = threading.Thread(target=self._loop, name=f"rater-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.client.close()


def decode(data: list[bytes]) -> Any:
    """Image bytes -> (N,3,H,W) float in [0,1] (one size per group, as a rollout has)."""
    import torch
    from PIL import Image

    arrs = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float32) / 255.0 for b in data]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


class SimDecider:
    """Like with probability ``clip(p + bias, 0, 1)``, then flipped with probability ``noise``.

    ``p`` is the underlying reward's score (clipped to [0, 1]), or ``score >= threshold`` when a
    threshold is given (for rewards that are not on a [0, 1] scale, e.g. OCR accuracy > 0.8). A
    sample the reward cannot score (NaN) gets p = 0.5.
    """

    def __init__(
        self, reward: Any, *, rater: str, noise: float = 0.0, bias: float = 0.0,
        threshold: float | None = None, seed: int = 0,
    ) -> None:  # fmt: skip
        self.reward, self.rater = reward, rater
        self.noise, self.bias, self.threshold, self.seed = noise, bias, threshold, seed

    def probabilities(self, group: Mapping[str, Any], data: list[bytes]) -> np.ndarray:
        n = len(data)
        out = self.reward(
            images=decode(data), prompts=[group["prompt"]] * n, metadata=[group["metadata"]] * n
        )
        s = out.scores.double().numpy()
        p = (s >= self.threshold).astype(float) if self.threshold is not None else np.clip(s, 0.0, 1.0)
        p = np.where(np.isnan(s), 0.5, p)
        return np.clip(p + self.bias, 0.0, 1.0)

    def __call__(self, group: Mapping[str, Any], data: list[bytes]) -> list[bool]:
        probs = self.probabilities(group, data)
        out = []
        for p, b in zip(probs, data, strict=True):
            key = hashlib.sha256(f"{self.seed}:{self.rater}:{hashlib.sha256(b).hexdigest()}".encode())
            u_like, u_flip = np.random.default_rng(int(key.hexdigest()[:16], 16)).random(2)
            like = bool(u_like < p)
            out.append(like != bool(u_flip < self.noise))
        return out
