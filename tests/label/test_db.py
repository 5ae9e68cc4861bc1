"""The label database: append-only labels, content-hash images, undo, export/import, bad files."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from tdm_r1.label.db import (
    LabelDB,
    LabelDBError,
    LockedError,
    ReadOnlyError,
    RunMismatchError,
    UnknownImageError,
)
from tdm_r1.testing.labelkit import make_db, png


def _ids(db: LabelDB, prompt: str) -> tuple[str, list[str]]:
    g = next(p for p in db.pending(limit=100) if p["prompt"] == prompt)
    return g["id"], [im["id"] for im in db.group(g["id"])["images"]]


def test_relabel_is_a_new_row_and_the_rate_is_the_mean_over_raters(tmp_path: Path) -> None:
    db = make_db(tmp_path / "l.sqlite", {"a cat": 2})
    gid, (a, b) = _ids(db, "a cat")
    first = db.add_label(a, "ann", 1, group_id=gid)
    second = db.add_label(a, "ann", 0, group_id=gid)
    assert second.supersedes == first.id  # never overwritten: the old row stays
    db.add_label(a, "bob", 1, group_id=gid)
    db.add_label(a, "cy", 1, group_id=gid)
    rates = db.rates([a, b])
    assert rates[a].rate == pytest.approx(2 / 3) and rates[a].raters == 3 and rates[a].likes == 2
    assert rates[a].disagreement == pytest.approx(1 / 3)
    assert math.isnan(rates[b].rate) and rates[b].raters == 0
    rows = sqlite3.connect(db.path).execute("SELECT rater, label FROM labels ORDER BY id").fetchall()
    assert rows == [("ann", 1), ("ann", 0), ("bob", 1), ("cy", 1)]


def test_groups_and_images_are_keyed_by_content(tmp_path: Path) -> None:
    db = LabelDB(tmp_path / "l.sqlite")
    gid, new = db.add_group("p", [png(1), png(2)])
    again, new2 = db.add_group("p", [png(2), png(1)])  # same images, other order: same group
    other, new3 = db.add_group("q", [png(1)])  # same image, other prompt: new group, image stored once
    assert (new, new2, new3) == (True, False, True) and again == gid and other != gid
    assert db.stats()["images"] == 2 and db.stats()["groups"] == 2
    with pytest.raises(LabelDBError, match="PNG and JPEG"):
        db.add_group("r", [b"not an image"])
    assert db.stats()["groups"] == 2


def test_undo_clears_the_latest_standing_label_of_the_group(tmp_path: Path) -> None:
    db = make_db(tmp_path / "l.sqlite", {"p": 3})
    gid, (a, b, c) = _ids(db, "p")
    db.add_label(a, "ann", 1, group_id=gid)
    db.add_label(b, "ann", 0, group_id=gid)
    db.add_label(c, "bob", 1, group_id=gid)
    assert db.undo("ann", gid).image_id == b
    assert db.undo("ann", gid).image_id == a
    assert db.undo("ann", gid) is None
    assert db.rates([a, b, c])[c].raters == 1 and db.rates([a])[a].raters == 0
    assert db.stats()["label_rows"] == 5  # 3 labels + 2 clearing rows, none deleted


def test_a_client_id_is_stored_once(tmp_path: Path) -> None:
    db = make_db(tmp_path / "l.sqlite", {"p": 1})
    gid, (a,) = _ids(db, "p")
    assert db.add_label(a, "ann", 1, client_id="x").stored
    assert not db.add_label(a, "ann", 1, client_id="x").stored  # a retry: nothing written
    assert db.stats()["label_rows"] == 1 and db.rates([a])[a].rate == 1.0


def test_client_ids_are_each_raters_own_and_a_changed_reuse_is_refused(tmp_path: Path) -> None:
    """Issue item 2: Bob posting Alice's client_id stores Bob's label; Alice reusing hers for
    another label is refused instead of being answered "already stored"."""
    from tdm_r1.label.records import ClientIdConflictError

    db = make_db(tmp_path / "l.sqlite", {"p": 2})
    gid, (a, b) = _ids(db, "p")
    alice = db.add_label(a, "alice", 1, group_id=gid, client_id="sim:alice:x")
    bob = db.add_label(a, "bob", 0, group_id=gid, client_id="sim:alice:x")
    assert bob.stored and bob.rater == "bob" and bob.label == 0 and bob.id != alice.id
    assert db.rates([a])[a].raters == 2
    with pytest.raises(ClientIdConflictError, match="already used for another label"):
        db.add_label(a, "alice", 0, group_id=gid, client_id="sim:alice:x")
    with pytest.raises(ClientIdConflictError):
        db.add_label(b, "alice", 1, group_id=gid, client_id="sim:alice:x")
    for bad in ("x" * 129, "has space", "a@b"):  # bounded by format and length
        with pytest.raises(LabelDBError, match="client_id"):
            db.add_label(a, "alice", 1, client_id=bad)
    assert db.stats()["label_rows"] == 2


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_import_round_trip(tmp_path: Path, suffix: str) -> None:
    src = make_db(tmp_path / "a.sqlite", {"p": 2, "q": 2})
    ids = []
    for prompt in ("p", "q"):
        gid, imgs = _ids(src, prompt)
        ids += imgs
        for k, im in enumerate(imgs):
            src.add_label(im, "ann", k % 2, group_id=gid)
            src.add_label(im, "bob", 1, group_id=gid)
    src.undo("bob")
    out = tmp_path / f"labels{suffix}"
    assert src.export(out) == 9
    dst = make_db(tmp_path / "b.sqlite", {"p": 2, "q": 2})
    assert dst.import_labels(out) == 9
    assert dst.import_labels(out) == 0  # same client ids: stored once
    assert {k: (v.rate, v.raters) for k, v in dst.rates(ids).items()} == {
        k: (v.rate, v.raters) for k, v in src.rates(ids).items()
    }


def test_import_with_an_unknown_image_writes_nothing(tmp_path: Path) -> None:
    src = make_db(tmp_path / "a.sqlite", {"p": 2, "q": 1})
    for prompt in ("p", "q"):
        gid, imgs = _ids(src, prompt)
        for im in imgs:
            src.add_label(im, "ann", 1, group_id=gid)
    src.export(tmp_path / "x.csv")
    dst = make_db(tmp_path / "b.sqlite", {"p": 2})  # lacks q's image
    with pytest.raises(UnknownImageError, match="nothing was imported"):
        dst.import_labels(tmp_path / "x.csv")
    assert dst.stats()["label_rows"] == 0


def test_unknown_image_and_bad_values_are_refused(tmp_path: Path) -> None:
    db = make_db(tmp_path / "l.sqlite", {"p": 1, "q": 1})
    gp, (a,) = _ids(db, "p")
    gq, _ = _ids(db, "q")
    with pytest.raises(UnknownImageError, match="no image"):
        db.add_label("f" * 64, "ann", 1)
    with pytest.raises(UnknownImageError, match="not in group"):
        db.add_label(a, "ann", 1, group_id=gq)
    with pytest.raises(LabelDBError, match="label must be"):
        db.add_label(a, "ann", 2)
    with pytest.raises(LabelDBError, match="rater name"):
        db.add_label(a, " ", 1)
    assert db.stats()["label_rows"] == 0


def test_database_of_another_run_and_foreign_files_are_refused(tmp_path: Path) -> None:
    make_db(tmp_path / "l.sqlite", {"p": 1}, run="run-a")
    with pytest.raises(RunMismatchError, match="belongs to run 'run-a'"):
        LabelDB(tmp_path / "l.sqlite", run="run-b")
    assert LabelDB(tmp_path / "l.sqlite", run="run-a").run == "run-a"
    (tmp_path / "junk.sqlite").write_text("hello")
    with pytest.raises(LabelDBError, match="not a tdmbench label database"):
        LabelDB(tmp_path / "junk.sqlite")
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t(x)")
    with pytest.raises(LabelDBError, match="not a tdmbench label database"):
        LabelDB(tmp_path / "other.sqlite")
    with pytest.raises(LabelDBError, match="no label database"):
        LabelDB(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(LabelDBError, match="does not exist"):
        LabelDB(tmp_path / "no" / "dir.sqlite")


def test_read_only_and_locked_databases_write_nothing(tmp_path: Path) -> None:
    db = make_db(tmp_path / "l.sqlite", {"p": 1})
    gid, (a,) = _ids(db, "p")
    db.add_label(a, "ann", 1, group_id=gid)
    ro = LabelDB(tmp_path / "l.sqlite", readonly=True)
    assert ro.rates([a])[a].rate == 1.0
    with pytest.raises(ReadOnlyError, match="read-only"):
        ro.add_label(a, "ann", 0)
    other = sqlite3.connect(tmp_path / "l.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    busy = LabelDB(tmp_path / "l.sqlite", timeout=0.2)
    with pytest.raises(LockedError, match="locked by another process"):
        busy.add_label(a, "ann", 0)
    other.execute("ROLLBACK")
    assert busy.stats()["label_rows"] == 1 and busy.rates([a])[a].rate == 1.0
    busy.add_label(a, "ann", 0)
    assert busy.rates([a])[a].rate == 0.0


def test_pending_lists_groups_a_rater_has_not_finished(tmp_path: Path) -> None:
    db = make_db(tmp_path / "l.sqlite", {"p": 2, "q": 1})
    gp, (a, b) = _ids(db, "p")
    db.add_label(a, "ann", 1, group_id=gp)
    db.add_label(b, "ann", 1, group_id=gp)
    assert [g["prompt"] for g in db.pending("ann")] == ["q"]
    assert [g["prompt"] for g in db.pending("bob")] == ["p", "q"]
    db.set_status([gp], "done")
    assert [g["prompt"] for g in db.pending("bob")] == ["q"]
