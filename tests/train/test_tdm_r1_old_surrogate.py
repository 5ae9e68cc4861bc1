"""TDM-R1's "old" surrogate (the PPO clip's anchor) follows the surrogate with the public decay schedule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tdm_r1.train.config import load_train_config
from tdm_r1.train.methods import common
from tdm_r1.train.methods import tdm_r1 as plugin


@pytest.mark.parametrize(
    ("updates_done", "decay"), [(1, 0.001), (2, 0.002), (100, 0.1), (300, 0.3), (5000, 0.3)]
)
def test_the_nth_surrogate_update_moves_the_old_copy_with_decay_0001_plus_0001_times_the_updates_before(
    monkeypatch: pytest.MonkeyPatch, updates_done: int, decay: float
) -> None:
    """min(0.3, 0.001 + 0.001 n), n = surrogate updates before this one: 0.001 at the first update
    (the trainer has already counted the update when ``after_update`` runs)."""
    seen: list[tuple[str, str, float]] = []
    monkeypatch.setattr(common, "soft_update", lambda loop, t, s, d: seen.append((t, s, d)))
    method = object.__new__(plugin.TdmR1)
    method.cfg = load_train_config("toy-ocr")
    method.loop = SimpleNamespace(updates={plugin.SUR: updates_done})
    method.after_update(plugin.SUR)
    assert [(t, s) for t, s, _ in seen] == [(plugin.OLD, plugin.SUR)]
    assert seen[0][2] == pytest.approx(decay)
    seen.clear()
    method.after_update(plugin.GEN)  # only a surrogate update moves the copies
    assert seen == []
