"""The label store: one SQLite file (WAL mode) of images, groups and binary likes.

Tables:

* ``images``: PNG (or JPEG) bytes keyed by their sha256 (the content hash is the image id: the
  web app serves images by this id only, never by a path);
* ``groups``: one prompt with its images (``group_images``); the id hashes the prompt and the
  image ids, so registering the same rollout twice (a resumed run) adds nothing;
* ``labels``: append-only, one row per (image, rater) decision with time and rater; a relabel is
  a new row whose ``supersedes`` names the row it replaces, an undo a row with ``label`` NULL.
  The current label of (image, rater) is its newest row. ``client_id`` is unique per rater
  (``tdm_r1.label.client_ids``), so a label posted twice (a retried request, an import of an
  export) is stored once.

Every write is one ``BEGIN IMMEDIATE`` transaction: it is stored whole or not at all. SQLite's
"readonly" / "locked" errors become :class:`ReadOnlyError` / :class:`LockedError` with the file
name and what to do. Errors and returned records: ``tdm_r1.label.records``; export and import
files: ``tdm_r1.label.transfer``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tdm_r1.label.client_ids import replay, scoped
from tdm_r1.label.records import (
    LabelDBError,
    LabelRow,
    LockedError,
    Rate,
    ReadOnlyError,
    RunMismatchError,
    UnknownImageError,
    content_id,
    group_id,
    image_mime,
)
from tdm_r1.label.transfer import EXPORT_COLUMNS

__all__ = [
    "EXPORT_COLUMNS",
    "LABELS",
    "LabelDB",
    "LabelDBError",
    "LabelRow",
    "LockedError",
    "Rate",
    "ReadOnlyError",
    "RunMismatchError",
    "UnknownImageError",
    "content_id",
    "group_id",
    "writable",
]

APP_ID = "tdmbench-likes"
SCHEMA_VERSION = "1"
LABELS = {"like": 1, "dislike": 0}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images(
  id TEXT PRIMARY KEY, data BLOB NOT NULL, mime TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS groups(
  id TEXT PRIMARY KEY, prompt TEXT NOT NULL, metadata TEXT NOT NULL, source TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending', created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS group_images(
  group_id TEXT NOT NULL REFERENCES groups(id), image_id TEXT NOT NULL REFERENCES images(id),
  position INTEGER NOT NULL, PRIMARY KEY(group_id, image_id));
CREATE TABLE IF NOT EXISTS labels(
  id INTEGER PRIMARY KEY AUTOINCREMENT, image_id TEXT NOT NULL REFERENCES images(id),
  group_id TEXT, rater TEXT NOT NULL, label INTEGER CHECK (label IN (0, 1) OR label IS NULL),
  created REAL NOT NULL, supersedes INTEGER REFERENCES labels(id), client_id TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS labels_image_rater ON labels(image_id, rater, id);
CREATE INDEX IF NOT EXISTS group_images_image ON group_images(image_id);
"""
# The newest row of each (image, rater): SQLite returns the bare columns of the max(id) row.
_CURRENT = "SELECT image_id, rater, label, max(id) AS id FROM labels GROUP BY image_id, rater"


class LabelDB:
    """A label database file. Thread-safe: each thread gets its own connection.

    Args:
        path: the SQLite file (created with ``create=True`` when missing).
        run: the training run this database belongs to; a database recorded for another run is
            refused (:class:`RunMismatchError`). None = no check.
        readonly: open without write access (offline training, inspection).
        timeout: seconds a write waits for another writer before :class:`LockedError`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        run: str | None = None,
        create: bool = True,
        readonly: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.timeout = timeout
        self._local = threading.local()
        # Threads of one process take turns here: SQLite's own busy handler sleeps in steps of
        # up to 100 ms, which would make two concurrent raters wait on each other.
        self._write_lock = threading.Lock()
        if not self.path.is_file():
            if not create or readonly:
                raise LabelDBError(f"no label database at {self.path} (give an existing file, or create one)")
            if not self.path.parent.is_dir():
                raise LabelDBError(f"folder {self.path.parent} does not exist: create it first")
            self._init_schema()
        elif create and not readonly and self._blank():
            self._init_schema()  # another process created the file a moment ago: same idempotent schema
        self._check_app()
        if run:
            self._check_run(run)

    # -------------------------------------------------------------------------- connections
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.readonly:
                    conn = sqlite3.connect(
                        f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout, isolation_level=None
                    )
                else:
                    conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                # WAL + NORMAL: a commit is atomic and survives a crash of the app; only a power cut
                # can lose the last commits (FULL would fsync every label: ~30 ms each here).
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _translate(self, exc: sqlite3.Error) -> LabelDBError:
        msg = str(exc).lower()
        if "readonly" in msg or "read-only" in msg:
            return ReadOnlyError(
                f"label database {self.path} is read-only ({exc}): nothing was written; make the file "
                "and its folder writable, or open it for reading only"
            )
        if "locked" in msg or "busy" in msg:
            return LockedError(
                f"label database {self.path} is locked by another process ({exc}): nothing was written; "
                "retry when the other writer is done"
            )
        if "not a database" in msg or "malformed" in msg:
            return LabelDBError(
                f"{self.path} is not a tdmbench label database ({exc}); give another --db path"
            )
        return LabelDBError(f"label database {self.path}: {exc}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed whole, or rolled back and nothing written."""
        if self.readonly:
            raise ReadOnlyError(f"label database {self.path} was opened read-only: nothing was written")
        conn = self._conn()
        # bounded like SQLite's own busy wait: a writer stuck in another thread cannot hang this one
        if not self._write_lock.acquire(timeout=self.timeout):
            raise LockedError(
                f"label database {self.path}: another thread of this process held the write lock for "
                f"more than {self.timeout:g} s; nothing was written (retry)"
            )
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise
        finally:
            self._write_lock.release()

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one read statement (SQLite errors become :class:`LabelDBError` s)."""
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _init_schema(self) -> None:
        conn = self._conn()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        with self.transaction() as c:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.executemany(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                [("app", APP_ID), ("schema", SCHEMA_VERSION), ("run", ""), ("created", str(time.time()))],
            )

    def _blank(self) -> bool:
        """An SQLite file without any table (just created; never someone else's database)."""
        try:
            return self._conn().execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        except sqlite3.Error:
            return False

    def _check_app(self) -> None:
        try:
            rows = self._conn().execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.Error as exc:
            raise LabelDBError(
                f"{self.path} is not a tdmbench label database ({exc}); give another --db path"
            ) from exc
        meta = {r["key"]: r["value"] for r in rows}
        if meta.get("app") != APP_ID:
            raise LabelDBError(f"{self.path} is not a tdmbench label database (no '{APP_ID}' marker)")
        if meta.get("schema") != SCHEMA_VERSION:
            raise LabelDBError(
                f"{self.path} has label schema {meta.get('schema')!r}; this tdmbench reads {SCHEMA_VERSION!r}"
            )

    def meta(self) -> dict[str, str]:
        """The database's key-value metadata (schema version, creation, ...)."""
        return {r["key"]: r["value"] for r in self.query("SELECT key, value FROM meta")}

    @property
    def run(self) -> str:
        """The training run this database labels for ("" for a free-standing one)."""
        return self.meta().get("run", "")

    def _check_run(self, run: str) -> None:
        stored = self.run
        if stored and stored != run:
            raise RunMismatchError(
                f"label database {self.path} belongs to run {stored!r}, not {run!r}: its groups are "
                "another model's samples. Use a new --db file for this run (or the right --run)."
            )
        if not stored and not self.readonly:
            with self.transaction() as c:
                c.execute("UPDATE meta SET value = ? WHERE key = 'run'", (run,))

    def check_writable(self) -> None:
        """Raise :class:`ReadOnlyError` / :class:`LockedError` now rather than at the first label."""
        with self.transaction() as c:
            c.execute("UPDATE meta SET value = value WHERE key = 'app'")

    # ------------------------------------------------------------------------ images, groups
    def add_group(
        self,
        prompt: str,
        images: Sequence[bytes],
        *,
        metadata: dict[str, Any] | None = None,
        source: str = "images",
    ) -> tuple[str, bool]:
        """Register a prompt with its images (PNG/JPEG bytes). Returns (group id, newly added)."""
        if not images:
            raise LabelDBError("a group needs at least one image")
        ids = [content_id(b) for b in images]
        mimes = [image_mime(b) for b in images]
        gid = group_id(prompt, ids)
        meta_json = json.dumps(metadata or {}, sort_keys=True, default=str)
        now = time.time()
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM groups WHERE id = ?", (gid,)).fetchone():
                return gid, False
            c.executemany(
                "INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?)",
                [(i, b, m, now) for i, b, m in zip(ids, images, mimes, strict=True)],
            )
            c.execute(
                "INSERT INTO groups(id, prompt, metadata, source, created) VALUES (?, ?, ?, ?, ?)",
                (gid, prompt, meta_json, source, now),
            )
            c.executemany(
                "INSERT OR IGNORE INTO group_images VALUES (?, ?, ?)",
                [(gid, i, k) for k, i in enumerate(ids)],
            )
        return gid, True

    def set_status(self, group_ids: Iterable[str], status: str) -> None:
        with self.transaction() as c:
            c.executemany("UPDATE groups SET status = ? WHERE id = ?", [(status, g) for g in group_ids])

    def image(self, image_id: str) -> tuple[bytes, str]:
        rows = self.query("SELECT data, mime FROM images WHERE id = ?", (image_id,))
        if not rows:
            raise UnknownImageError(f"no image {image_id!r} in {self.path}")
        return bytes(rows[0]["data"]), rows[0]["mime"]

    def group(self, gid: str, rater: str | None = None) -> dict[str, Any] | None:
        """A group's prompt, metadata, status and images (with ``rater``'s current labels)."""
        rows = self.query("SELECT * FROM groups WHERE id = ?", (gid,))
        if not rows:
            return None
        g = rows[0]
        imgs = self.query(
            f"SELECT gi.image_id, cur.label FROM group_images gi LEFT JOIN ({_CURRENT}) cur "
            "ON cur.image_id = gi.image_id AND cur.rater = ? WHERE gi.group_id = ? ORDER BY gi.position",
            (rater or "", gid),
        )
        return {
            "id": gid,
            "prompt": g["prompt"],
            "metadata": json.loads(g["metadata"]),
            "status": g["status"],
            "source": g["source"],
            "images": [{"id": r["image_id"], "label": r["label"]} for r in imgs],
        }

    def pending(self, rater: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Pending groups, oldest first, with how many images ``rater`` (or anyone) labelled."""
        who = "AND cur.rater = ?" if rater else ""
        args: list[Any] = [rater] if rater else []
        rows = self.query(
            "SELECT g.id, g.prompt, count(DISTINCT gi.image_id) AS n, "
            "count(DISTINCT CASE WHEN cur.label IS NOT NULL THEN gi.image_id END) AS done "
            f"FROM groups g JOIN group_images gi ON gi.group_id = g.id LEFT JOIN ({_CURRENT}) cur "
            f"ON cur.image_id = gi.image_id {who} WHERE g.status = 'pending' GROUP BY g.id ORDER BY g.rowid",
            args,
        )
        out = [{"id": r["id"], "prompt": r["prompt"], "images": r["n"], "labelled": r["done"]} for r in rows]
        return [g for g in out if g["labelled"] < g["images"]][:limit]

    # ---------------------------------------------------------------------------------- labels
    def add_label(
        self,
        image_id: str,
        rater: str,
        label: int | None,
        *,
        group_id: str | None = None,
        client_id: str | None = None,
        created: float | None = None,
    ) -> LabelRow:
        """Store one decision (1 like, 0 dislike, None = cleared) as a new row superseding the last."""
        rater = (rater or "").strip()
        if not rater or len(rater) > 64:
            raise LabelDBError("a rater name of 1 to 64 characters is needed")
        if label not in (0, 1, None):
            raise LabelDBError(f"label must be like (1), dislike (0) or cleared (None), got {label!r}")
        sent_id = client_id or uuid.uuid4().hex
        key = scoped(rater, sent_id)
        with self.transaction() as c:
            old = c.execute("SELECT * FROM labels WHERE client_id = ?", (key,)).fetchone()
            if old is not None:
                return replay(old, rater, image_id, label, group_id, sent_id)
            if not c.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
                raise UnknownImageError(f"no image {image_id!r} in this label database")
            if (
                group_id is not None
                and not c.execute(
                    "SELECT 1 FROM group_images WHERE group_id = ? AND image_id = ?", (group_id, image_id)
                ).fetchone()
            ):
                raise UnknownImageError(f"image {image_id!r} is not in group {group_id!r}")
            prev = c.execute(
                "SELECT id FROM labels WHERE image_id = ? AND rater = ? ORDER BY id DESC LIMIT 1",
                (image_id, rater),
            ).fetchone()
            sup = prev["id"] if prev else None
            cur = c.execute(
                "INSERT INTO labels(image_id, group_id, rater, label, created, supersedes, client_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (image_id, group_id, rater, label, created or time.time(), sup, key),
            )
            return LabelRow(int(cur.lastrowid or 0), image_id, rater, label, sup, True)

    def undo(self, rater: str, group_id: str | None = None) -> LabelRow | None:
        """Clear ``rater``'s most recent still-standing label (in ``group_id``), by a new NULL row."""
        where = "AND l.group_id = ?" if group_id else ""
        args: list[Any] = [rater] + ([group_id] if group_id else [])
        rows = self.query(
            f"SELECT cur.image_id, l.group_id FROM ({_CURRENT}) cur JOIN labels l ON l.id = cur.id "
            f"WHERE cur.rater = ? AND cur.label IS NOT NULL {where} ORDER BY cur.id DESC LIMIT 1",
            args,
        )
        if not rows:
            return None
        return self.add_label(rows[0]["image_id"], rater, None, group_id=rows[0]["group_id"])

    def rates(self, image_ids: Iterable[str]) -> dict[str, Rate]:
        """Like rate per image over its raters' current (non-cleared) labels."""
        ids = list(dict.fromkeys(image_ids))
        out = {i: Rate(float("nan"), 0, 0) for i in ids}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            rows = self.query(
                f"SELECT image_id, count(*) AS n, sum(label) AS likes FROM ({_CURRENT}) "
                f"WHERE label IS NOT NULL AND image_id IN ({','.join('?' * len(part))}) GROUP BY image_id",
                part,
            )
            for r in rows:
                out[r["image_id"]] = Rate(r["likes"] / r["n"], r["n"], r["likes"])
        return out

    def stats(self) -> dict[str, int]:
        one = lambda sql: int(self.query(sql)[0][0] or 0)  # noqa: E731
        return {
            "images": one("SELECT count(*) FROM images"),
            "groups": one("SELECT count(*) FROM groups"),
            "pending_groups": len(self.pending(limit=10**9)),
            "label_rows": one("SELECT count(*) FROM labels"),
            "labels": one(f"SELECT count(*) FROM ({_CURRENT}) WHERE label IS NOT NULL"),
            "raters": one("SELECT count(DISTINCT rater) FROM labels"),
        }

    # ------------------------------------------------------------------------- export/import
    def export(self, path: str | Path) -> int:
        """Every label row (history included) to ``.csv`` or ``.parquet``. Returns the row count."""
        from tdm_r1.label.transfer import export_labels

        return export_labels(self, path)

    def import_labels(self, path: str | Path) -> int:
        """Add the rows of an export (images must be in this database). All or nothing; rows whose
        ``client_id`` is already stored are skipped. Returns the number added."""
        from tdm_r1.label.transfer import import_labels

        return import_labels(self, path)


def writable(path: str | Path) -> bool:
    """Whether the process may write the file and its folder (SQLite's WAL needs both)."""
    p = Path(path)
    return os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)
