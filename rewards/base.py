"""The reward contract, weighted sums, and ``--reward name[=weight]`` parsing.

A reward is a picklable callable class::

    reward(images=(N,3,H,W) float in [0,1], prompts=[str]*N, metadata=[dict]*N) -> RewardOutput

``scores`` is ``(N,)`` float32 on the CPU; NaN means "not applicable / could not be scored" and
comes with its reason in ``details["nan_reason"]`` (one string per sample, "" where scored).
Heavy imports and weights load in ``__init__``; the pure scoring core is a separate function.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from tdm_r1.errors import ConfigError, ShapeError, excerpt
from tdm_r1.images import check_images
from tdm_r1.weights import WeightFile

log = logging.getLogger(__name__)

NAN_REASON = "nan_reason"


@dataclass
class RewardOutput:
    """Scores ``(N,)`` float32 (CPU) and per-sample detail columns (tensor ``(N,)`` or list of N)."""

    scores: torch.Tensor
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).detach().cpu().reshape(-1)
        n = self.scores.shape[0]
        for key, col in self.details.items():
            if len(col) != n:
                raise ShapeError(f"detail column {key!r} has {len(col)} entries for {n} scores")

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def reasons(self) -> list[str]:
        return list(self.details.get(NAN_REASON, [""] * len(self)))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per sample: ``score`` plus every detail (tensors turned into Python scalars)."""
        out = []
        for i in range(len(self)):
            row: dict[str, Any] = {"score": float(self.scores[i])}
            for key, col in self.details.items():
                v = col[i]
                row[key] = v.item() if isinstance(v, torch.Tensor) else v
            out.append(row)
        return out


class _Version:
    """``Reward.version``: on the class, ``base_version``; on an instance, ``base_version`` followed
    by the instance's :meth:`Reward.version_suffix` (what its options, engine or weights change).

    Score-cache keys are planned from the class (``REWARDS.get(name).version``, before any reward
    is built); result rows record the instance's. Read-only: a reward changes its version through
    ``base_version`` (a scoring change) or ``version_suffix`` (an option that changes scores).
    """

    def __get__(self, obj: Reward | None, owner: type[Reward]) -> str:
        if obj is None:
            return owner.base_version
        return owner.base_version + obj.version_suffix()

    def __set__(self, obj: Reward, value: str) -> None:
        raise AttributeError(
            f"{type(obj).__name__}.version is computed: set the class's base_version or override version_suffix()"
        )


class Reward:
    """Base class of every reward. Subclasses set the class attributes and implement ``score``.

    Class attributes:
        name: registry name.
        base_version: bumped whenever the scoring changes. ``version`` is ``base_version`` on the
            class and ``base_version + version_suffix()`` on an instance; the instance's is written
            into every result row.
        higher_is_better: direction of the score.
        scale: one sentence stating the scale (e.g. "PickScore raw = 100 * cosine").
        weight_files: the weights it needs (``tdmbench weights`` lists them).
        score_range: ``(low, high)`` that every non-NaN score lies in, when the reward has one;
            a cached score outside it is treated as corrupt and computed again.
    """

    name: ClassVar[str] = ""
    base_version: ClassVar[str] = "1"
    version = _Version()
    higher_is_better: ClassVar[bool] = True
    scale: ClassVar[str] = ""
    score_range: ClassVar[tuple[float, float] | None] = None
    weight_files: ClassVar[tuple[WeightFile, ...]] = ()

    def __call__(
        self,
        *,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> RewardOutput:
        check_images(images)
        n = images.shape[0]
        if len(prompts) != n:
            raise ShapeError(f"{self.name}: {n} images but {len(prompts)} prompts")
        meta = [dict(m) for m in metadata] if metadata is not None else [{} for _ in range(n)]
        if len(meta) != n:
            raise ShapeError(f"{self.name}: {n} images but {len(meta)} metadata entries")
        out = self.score(images, list(prompts), meta)
        if len(out) != n:
            raise ShapeError(f"{self.name}: returned {len(out)} scores for {n} images")
        nan = torch.isnan(out.scores)
        if bool(nan.any()):
            reasons = out.reasons()
            missing = [i for i in range(n) if nan[i] and not reasons[i]]
            if missing:
                raise ShapeError(f"{self.name}: NaN scores without a reason at indices {missing[:5]}")
        return out

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        """Score a batch: ``images`` (N, 3, H, W) RGB in [0, 1], one prompt and one metadata dict per
        image -> :class:`RewardOutput` with (N,) float32 scores (a NaN needs a reason in the details).
        Call the reward itself (``reward(images=..., prompts=...)``): it checks shapes around this."""
        raise NotImplementedError

    def version_suffix(self) -> str:
        """What this instance adds to ``base_version`` (with its separator, e.g. ``"+flowgrpo26"``):
        the options, engine or weights that change its scores; "" when none do."""
        return ""

    @classmethod
    def required_weights(cls, options: Mapping[str, Any]) -> tuple[WeightFile, ...]:
        """The weight files an instance built with ``options`` loads (checked before any image is
        generated, so a missing one fails in seconds, not after the generation phase)."""
        return tuple(cls.weight_files)

    def check_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` for one image's metadata that this reward cannot use (a
        malformed clause, an unknown class): called on every row before any image is scored, so
        bad input fails at once with a message instead of scoring 0 or failing midway."""

    @property
    def id(self) -> str:
        """``name@version``: the identity written into caches and result rows."""
        return f"{self.name}@{self.version}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "higher_is_better": self.higher_is_better,
            "scale": self.scale,
        }


class WeightedSum(Reward):
    """``sum_k w_k * r_k``; each component's raw score is kept in ``details[<name>]``.

    A component NaN makes the sum NaN for that sample (with the component's reason), so a
    sample is never silently scored on a subset of its rewards. A weight-0 component is only
    reported (its raw score stays in the details): it never changes the sum, NaN included.
    """

    name = "weighted-sum"
    base_version = ""  # the version is the components' identities (see version_suffix)
    higher_is_better = True

    def __init__(self, components: Sequence[tuple[Reward, float]]) -> None:
        if not components:
            raise ConfigError("a weighted reward needs at least one component")
        for r, _w in components:
            if not r.higher_is_better:
                raise ConfigError(
                    f"reward {r.name!r} is lower-is-better; give it a negative weight in a sum only "
                    "through a dedicated higher-is-better variant"
                )
        self.components = list(components)
        self.scale = " + ".join(f"{w:g} * [{r.name}: {r.scale}]" for r, w in self.components)

    def version_suffix(self) -> str:
        return "+".join(f"{r.id}*{w:g}" for r, w in self.components)

    @property
    def id(self) -> str:
        return self.version

    def check_metadata(self, metadata: Mapping[str, Any]) -> None:
        for reward, _weight in self.components:
            reward.check_metadata(metadata)

    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        """The weighted sum of the member rewards' scores; each member's scores are kept as details."""
        n = images.shape[0]
        total = torch.zeros(n, dtype=torch.float32)
        details: dict[str, Any] = {}
        reasons = [""] * n
        for reward, weight in self.components:
            out = reward(images=images, prompts=prompts, metadata=metadata)
            details[reward.name] = out.scores.clone()
            for key, col in out.details.items():
                if key != NAN_REASON:
                    details[f"{reward.name}.{key}"] = col
            if weight == 0:
                continue
            total += weight * out.scores
            for i, why in enumerate(out.reasons()):
                if why and not reasons[i]:
                    reasons[i] = f"{reward.name}: {why}"
        details[NAN_REASON] = reasons
        return RewardOutput(total, details)


def parse_reward_specs(specs: Sequence[str] | str | Mapping[str, float]) -> dict[str, float]:
    """``["ocr=0.7", "pickscore=0.3"]`` or ``"ocr"`` -> ``{"ocr": 0.7, "pickscore": 0.3}``."""
    if isinstance(specs, Mapping):
        return {str(k): float(v) for k, v in specs.items()}
    if isinstance(specs, str):
        specs = [specs]
    out: dict[str, float] = {}
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, eq, w = part.partition("=")
            if not name.strip():
                raise ConfigError(f"reward spec {part!r} has no reward name (use name or name=0.5)")
            if eq and not w.strip():
                raise ConfigError(
                    f"reward {part!r} has '=' but no weight: write {name.strip()}=0.5, or drop the '='"
                )
            try:
                weight = float(w) if eq else 1.0
            except ValueError as exc:
                raise ConfigError(f"reward weight in {part!r} is not a number (use name=0.5)") from exc
            if not math.isfinite(weight):
                raise ConfigError(f"reward weight in {part!r} must be finite")
            if name.strip() in out:
                raise ConfigError(f"reward {name.strip()!r} is given twice")
            out[name.strip()] = weight
    if not out:
        raise ConfigError("no reward given (e.g. --reward ocr or --reward ocr=0.7 --reward pickscore=0.3)")
    if all(w == 0 for w in out.values()):
        raise ConfigError(
            f"every reward weight is 0 ({', '.join(f'{k}={v:g}' for k, v in out.items())}): the reward would "
            "be a constant; give at least one reward a nonzero weight"
        )
    return out


def check_reward_options(
    specs: Sequence[str] | str | Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """The options of each reward, keyed by its canonical name, after checking every option against
    its reward's constructor signature. Nothing is built and no weights load (the class is only
    imported), so ``train --dry-run`` refuses an option that the run itself would refuse.
    """
    import difflib
    import inspect

    from tdm_r1.registry import REWARDS

    weights = parse_reward_specs(specs)
    known = set(weights)
    # Options may name a reward by any alias (``hps`` for ``hpsv2.1``): key them canonically.
    by_canonical: dict[str, dict[str, Any]] = {}
    for key, opts in (options or {}).items():
        if key not in known and REWARDS.canonical(key) not in {REWARDS.canonical(k) for k in known}:
            raise ConfigError(f"options given for reward {key!r}, which is not among {sorted(known)}")
        if not isinstance(opts, Mapping):
            raise ConfigError(
                f"reward_options.{key} must be a mapping of option: value, got {excerpt(opts)!r}"
            )
        by_canonical.setdefault(REWARDS.canonical(key), {}).update(opts)
    for name in weights:
        given = by_canonical.get(REWARDS.canonical(name), {})
        params = inspect.signature(REWARDS.get(name)).parameters
        if not given or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        valid = [
            p for p, v in params.items() if p != "self" and v.kind is not inspect.Parameter.VAR_POSITIONAL
        ]
        for opt in given:
            if opt not in valid:
                close = difflib.get_close_matches(str(opt), valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"reward {name!r} has no option {excerpt(str(opt))!r}.{hint} Valid options: {', '.join(valid)}"
                )
    return by_canonical


def build_reward(
    specs: Sequence[str] | str | Mapping[str, float],
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | torch.device | None = None,
) -> Reward:
    """Instantiate one reward, or a :class:`WeightedSum` when several (or a weight != 1) are given.

    Args:
        specs: reward names with optional weights.
        options: per-reward constructor keyword arguments, keyed by reward name.
        device: passed to rewards whose constructor takes ``device``.
    """
    import inspect

    from tdm_r1.registry import REWARDS

    weights = parse_reward_specs(specs)
    by_canonical = check_reward_options(weights, options)
    built: list[tuple[Reward, float]] = []
    for name, weight in weights.items():
        cls = REWARDS.get(name)
        kwargs = dict(by_canonical.get(REWARDS.canonical(name), {}))
        if device is not None and "device" in inspect.signature(cls).parameters:
            kwargs.setdefault("device", device)
        try:
            built.append((cls(**kwargs), weight))
        except TypeError as exc:
            params = [p for p in inspect.signature(cls).parameters if p != "self"]
            raise ConfigError(f"bad options for reward {name!r}: {exc}. Valid options: {params}") from exc
    if len(built) == 1 and built[0][1] == 1.0:
        return built[0][0]
    return WeightedSum(built)
