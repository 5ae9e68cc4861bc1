"""Human binary likes as a reward (``likes``) and a simulated rater behind the same path (``likes-sim``).

``likes`` online (``db=...``): each call registers the images as pending groups (one per prompt)
in the label database, which ``tdmbench label --db`` serves to raters, then waits per ``policy``:

* ``wait``: until every image of every sent group has labels from ``raters`` raters, for at
  most ``max_wait`` seconds (default one day); then the run stops with an error that names the
  database and the unlabelled images (the groups stay pending: a resumed run finds them again);
* ``timeout``: at most ``timeout`` seconds, then unlabelled images score NaN (zero advantage);
* ``budget``: only a fraction ``budget`` of the groups is sent (chosen by a hash of the group, so
  a resumed run makes the same choice); the others score NaN and the surrogate learns from the
  labelled ones. It waits for the sent groups (up to ``timeout`` when one is given).

The score of an image is its like rate, the mean of its raters' current labels (1 like, 0
dislike); ``details`` keeps the number of raters and their disagreement (share against the
majority). Groups are keyed by the content hash of their prompt and images, so a run that is
stopped and resumed regenerates the same groups, finds them (and their labels) in the database,
and sends none twice.

``likes`` offline (``labels=...``): a database of earlier labels, opened read-only; an image
scores its like rate when the database holds it (same content hash) and NaN otherwise. Replaying
an online run's database with the same config and seed regenerates the same images.

``likes-sim``: ``likes`` plus simulated raters that label through the labelling app over HTTP
(started in this process on 127.0.0.1 unless ``url`` names a running one), see
:class:`tdm_r1.label.simrater.SimDecider`.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from tdm_r1.errors import ConfigError, WaitTimeoutError
from tdm_r1.registry import register_reward
from tdm_r1.rewards.base import NAN_REASON, Reward, RewardOutput

log = logging.getLogger(__name__)

POLICIES = ("wait", "timeout", "budget")
#: The bound of policy ``wait`` (seconds): no wait is endless, a rater who never comes ends the run.
DEFAULT_MAX_WAIT = 86400.0


def png_bytes(images: torch.Tensor) -> list[bytes]:
    """(N,3,H,W) float in [0,1] -> N PNG files (8-bit RGB, what a rater sees)."""
    from PIL import Image

    arr = (
        (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
    out = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def budget_pick(group_id: str, budget: float) -> bool:
    """Whether a group is sent under ``budget`` (a pure function of its id: resume-stable)."""
    return int(group_id[:8], 16) / 16**8 < budget


@register_reward("likes", aliases=("human-likes",))
class LikesReward(Reward):
    """Per-image like rate from human raters (see the module docstring).

    Args:
        db: label database for online labelling (created when missing).
        labels: label database of earlier labels (offline; read-only). Exactly one of db / labels.
        policy: "wait", "timeout" or "budget".
        timeout: seconds to wait (policy "timeout"; default 300) or None.
        budget: fraction of groups sent for labels (policy "budget").
        raters: labels each image needs before it counts as labelled.
        run: the run this database belongs to; a database of another run is refused.
        poll: seconds between database checks while waiting.
        max_wait: the longest policy ``wait`` waits (seconds) before it stops the run with an error.
    """

    name = "likes"
    base_version = "1"
    scale = "like rate in [0, 1]: mean over raters of 1 (like) / 0 (dislike)"

    def __init__(
        self,
        db: str | None = None,
        labels: str | None = None,
        policy: str = "wait",
        timeout: float | None = None,
        budget: float = 1.0,
        raters: int = 1,
        run: str | None = None,
        poll: float = 0.1,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        if (db is None) == (labels is None):
            raise ConfigError(
                f"{self.name} needs exactly one of db (online labelling, e.g. --set "
                f"reward_options.{self.name}.db=runs/NAME/likes.sqlite) or labels (earlier labels, offline)"
            )
        if policy not in POLICIES:
            raise ConfigError(f"{self.name}: policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if policy == "timeout" and timeout is None:
            timeout = 300.0
        if timeout is not None and not (float(timeout) > 0):
            raise ConfigError(f"{self.name}: timeout must be > 0 seconds, got {timeout!r}")
        if not 0.0 < float(budget) <= 1.0:
            raise ConfigError(f"{self.name}: budget must be in (0, 1], got {budget!r}")
        if policy != "budget" and float(budget) != 1.0:
            raise ConfigError(f"{self.name}: budget={budget} needs policy=budget")
        if int(raters) < 1:
            raise ConfigError(f"{self.name}: raters must be >= 1")
        if not (math.isfinite(float(max_wait)) and float(max_wait) > 0):
            raise ConfigError(
                f"{self.name}: max_wait must be a finite number of seconds > 0, got {max_wait!r}"
            )
        self.db_path, self.labels_path = db, labels
        self.policy, self.timeout, self.budget = policy, (float(timeout) if timeout else None), float(budget)
        self.raters, self.run, self.poll = int(raters), run, float(poll)
        self.max_wait = float(max_wait)
        self.labels_used = 0
        self._db: Any = None
        self._open()  # fail at setup, before any model is loaded

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_db"] = None
        return state

    def _open(self) -> Any:
        if self._db is None:
            from tdm_r1.label.db import LabelDB

            if self.labels_path is not None:
                self._db = LabelDB(self.labels_path, create=False, readonly=True)
            else:
                from pathlib import Path

                Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
                self._db = LabelDB(self.db_path, run=self.run)
                self._db.check_writable()
        return self._db

    @property
    def online(self) -> bool:
        return self.db_path is not None

    # -------------------------------------------------------------------------------- scoring
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        from tdm_r1.label.db import content_id, group_id

        db = self._open()
        n = len(prompts)
        data = png_bytes(images)
        ids = [content_id(b) for b in data]
        reasons = [""] * n
        gids = [""] * n
        if self.online:
            by_prompt: dict[str, list[int]] = {}
            for i, p in enumerate(prompts):
                by_prompt.setdefault(p, []).append(i)
            sent: list[str] = []
            new = 0
            for prompt, idx in by_prompt.items():
                gid = group_id(prompt, [ids[i] for i in idx])
                for i in idx:
                    gids[i] = gid
                if self.policy == "budget" and not budget_pick(gid, self.budget):
                    for i in idx:
                        reasons[i] = f"not sent for labels (budget {self.budget:g})"
                    continue
                _, added = db.add_group(
                    prompt, [data[i] for i in idx], metadata=metadata[idx[0]], source="trainer"
                )
                new += int(added)
                sent.append(gid)
            log.info(
                "likes: %d group(s) sent for labels (%d new, %d already known)",
                len(sent),
                new,
                len(sent) - new,
            )
            want = [i for i in range(n) if not reasons[i]]
            self._wait(db, [ids[i] for i in want], sent)
        rates = db.rates(ids)
        scores = torch.full((n,), float("nan"))
        n_raters = torch.zeros(n)
        disagree = torch.full((n,), float("nan"))
        for i, iid in enumerate(ids):
            r = rates[iid]
            if reasons[i]:
                continue
            if r.raters >= self.raters:
                scores[i], n_raters[i], disagree[i] = r.rate, r.raters, r.disagreement
            elif not self.online:
                reasons[i] = "not in the label database (offline labels hold other images)"
            else:
                reasons[i] = f"{r.raters} of {self.raters} label(s) before the {self.timeout:g} s timeout"
        scored = int(torch.isfinite(scores).sum())
        used = int(n_raters.sum())
        self.labels_used += used
        mean_dis = float(disagree[torch.isfinite(disagree)].mean()) if scored else float("nan")
        log.info(
            "likes: %d of %d images scored from %d labels (%d used so far), mean disagreement %.3f",
            scored, n, used, self.labels_used, mean_dis,
        )  # fmt: skip
        details: dict[str, Any] = {
            "raters": n_raters,
            "disagreement": disagree,
            "group": gids,
            NAN_REASON: reasons,
        }
        return RewardOutput(scores, details)

    def _wait(self, db: Any, image_ids: Sequence[str], groups: list[str]) -> None:
        """Block until each image has ``raters`` labels, or the timeout; then close the groups.

        Policy ``wait`` (no ``timeout``) is bounded by ``max_wait``: past it a
        :class:`~tdm_r1.errors.WaitTimeoutError` stops the run and the groups stay pending.
        """
        t0 = time.monotonic()
        last_note = t0
        self._on_wait()
        while True:
            rates = db.rates(image_ids)
            missing = sum(1 for i in image_ids if rates[i].raters < self.raters)
            if not missing:
                break
            now = time.monotonic()
            if self.timeout is not None and now - t0 >= self.timeout:
                log.warning("likes: %d image(s) unlabelled after %.0f s; they score NaN", missing, now - t0)
                break
            if self.timeout is None and now - t0 >= self.max_wait:
                raise WaitTimeoutError(
                    f"{self.name}: waited {now - t0:.0f} s (max_wait {self.max_wait:g} s) for "
                    f"{self.raters} label(s) on each of {len(image_ids)} image(s) in {len(groups)} group(s); "
                    f"{missing} image(s) still unlabelled in {self.db_path}. Serve them with `tdmbench "
                    f"label --db {self.db_path}` and resume the run (the groups stay pending), or set "
                    f"reward_options.{self.name}.policy=timeout to score unlabelled images NaN"
                )
            if now - last_note > 30:
                log.info(
                    "likes: waiting for labels on %d image(s) (tdmbench label --db %s)", missing, self.db_path
                )
                last_note = now
            self._check_raters()
            time.sleep(self.poll)
        done = [g for g in groups if all(rates[i["id"]].raters >= self.raters for i in db.group(g)["images"])]
        db.set_status(done, "done")
        late = [g for g in groups if g not in set(done)]
        if late:
            db.set_status(late, "expired")

    def _on_wait(self) -> None:
        """Hook: ``likes-sim`` starts its raters here."""

    def _check_raters(self) -> None:
        """Hook: ``likes-sim`` reports a simulated rater that stopped."""


@register_reward("likes-sim")
class LikesSimReward(LikesReward):
    """``likes`` with simulated raters answering through the labelling app over HTTP.

    Args (besides those of ``likes``; ``raters`` is also the number of simulated raters):
        base: the underlying reward giving the like probability (default toy GenEval ``correct``).
        base_options: its options (default for geneval: shapes backend, correct).
        noise: probability that a rater's answer is flipped.
        bias: added to the like probability (one value, or one per rater).
        threshold: like probability = 1[base score >= threshold] (e.g. OCR accuracy > 0.8).
        seed: seed of the raters' draws.
        url: a running labelling app to post to (default: one started in this process).
    """

    name = "likes-sim"
    base_version = "1"
    scale = "like rate in [0, 1] of simulated raters (like ~ Bernoulli(base reward + bias), flipped by noise)"

    def __init__(
        self,
        db: str | None = None,
        labels: str | None = None,
        policy: str = "wait",
        timeout: float | None = None,
        budget: float = 1.0,
        raters: int = 1,
        run: str | None = None,
        poll: float = 0.05,
        max_wait: float = DEFAULT_MAX_WAIT,
        base: str = "geneval",
        base_options: dict[str, Any] | None = None,
        noise: float = 0.0,
        bias: float | list[float] = 0.0,
        threshold: float | None = None,
        seed: int = 0,
        url: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(
            db=db,
            labels=labels,
            policy=policy,
            timeout=timeout,
            budget=budget,
            raters=raters,
            run=run,
            poll=poll,
            max_wait=max_wait,
        )
        if not 0.0 <= float(noise) <= 0.5:
            raise ConfigError(f"likes-sim: noise must be in [0, 0.5] (a flip probability), got {noise!r}")
        biases = list(bias) if isinstance(bias, list | tuple) else [float(bias)] * self.raters
        if len(biases) != self.raters or not all(math.isfinite(float(b)) for b in biases):
            raise ConfigError(f"likes-sim: bias must be one number or {self.raters} numbers, got {bias!r}")
        if base_options is None and base == "geneval":
            base_options = {"backend": "shapes", "score": "correct"}
        from tdm_r1.rewards.base import build_reward

        self.base = build_reward({base: 1.0}, options={base: dict(base_options or {})}, device=device)
        self.noise, self.biases, self.threshold = float(noise), [float(b) for b in biases], threshold
        self.seed, self.url = int(seed), url
        self._server: Any = None
        self._raters: list[Any] = []

    def version_suffix(self) -> str:
        return f"+{self.base.id}+noise{self.noise:g}"

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_server"], state["_raters"] = None, []
        return state

    def _on_wait(self) -> None:
        if self._raters or not self.online:
            return
        from tdm_r1.label.simrater import HttpRater, SimDecider

        url = self.url
        if url is None:
            from tdm_r1.label.app import BackgroundServer, create_app
            from tdm_r1.label.db import LabelDB

            self._server = BackgroundServer(create_app(LabelDB(self.db_path))).start()
            url = self._server.url
            log.info("likes-sim: labelling app at %s", url)
        for k, b in enumerate(self.biases):
            name = f"sim-{k}"
            dec = SimDecider(
                self.base, rater=name, noise=self.noise, bias=b, threshold=self.threshold, seed=self.seed
            )
            self._raters.append(HttpRater(url, name, dec).start())

    def _check_raters(self) -> None:
        for r in self._raters:
            if r.error is not None:
                raise RuntimeError(f"likes-sim: simulated rater {r.name} failed: {r.error}") from r.error

    def close(self) -> None:
        for r in self._raters:
            r.stop()
        self._raters = []
        if self._server is not None:
            self._server.stop()
            self._server = None
