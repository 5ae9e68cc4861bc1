"""Label exports and imports: every label row (history included) to and from ``.csv`` / ``.parquet``.

An export holds the label rows, not the images: an import needs the images in the target database
already (the same rollout registered there), and adds each row once (``client_id`` is unique).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tdm_r1.csv_files import read_csv, read_parquet
from tdm_r1.errors import excerpt
from tdm_r1.label.records import ClientIdConflictError, LabelDBError, UnknownImageError

if TYPE_CHECKING:
    from tdm_r1.label.db import LabelDB

EXPORT_COLUMNS = (
    "id",
    "image_id",
    "group_id",
    "prompt",
    "rater",
    "label",
    "created",
    "supersedes",
    "client_id",
)


def export_labels(db: LabelDB, path: str | Path) -> int:
    """Every label row (history included) to ``.csv`` or ``.parquet``. Returns the row count."""
    import pandas as pd

    path = Path(path)
    rows = db.query(
        "SELECT l.id, l.image_id, l.group_id, g.prompt, l.rater, l.label, l.created, l.supersedes, "
        "l.client_id FROM labels l LEFT JOIN groups g ON g.id = l.group_id ORDER BY l.id"
    )
    df = pd.DataFrame([dict(r) for r in rows], columns=list(EXPORT_COLUMNS))
    df["label"] = df["label"].astype("Int64")
    df["supersedes"] = df["supersedes"].astype("Int64")
    _check_suffix(path)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return len(df)


def import_labels(db: LabelDB, path: str | Path) -> int:
    """Add the rows of an export (images must be in this database). All or nothing.

    Rows whose ``client_id`` is already stored are skipped. Returns the number added.
    """
    import pandas as pd

    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise LabelDBError(f"no label file at {path}")
    if path.suffix == ".csv":
        df = read_csv(path, "label file", dtype={"client_id": str})
    else:
        df = read_parquet(path, "label file")
    missing = {"image_id", "rater", "label", "created", "client_id"} - set(df.columns)
    if missing:
        raise LabelDBError(f"{path} lacks the column(s) {sorted(missing)} of a label export")
    added = 0
    with db.transaction() as c:
        for k, r in enumerate(df.itertuples(index=False), start=2):
            try:
                label = None if pd.isna(r.label) else int(r.label)
                created = float(r.created)
            except (TypeError, ValueError):
                label, created = -1, 0.0
            if label not in (0, 1, None) or not isinstance(r.rater, str) or not r.rater.strip():
                raise LabelDBError(
                    f"{path} line {k}: bad label {excerpt(r.label)!r}, created {excerpt(r.created)!r} "
                    f"or rater {excerpt(r.rater)!r}; nothing was imported"
                )
            old = c.execute("SELECT * FROM labels WHERE client_id = ?", (r.client_id,)).fetchone()
            if old is not None:
                if (old["rater"], old["image_id"], old["label"]) != (r.rater, r.image_id, label):
                    raise ClientIdConflictError(
                        f"{path} line {k}: client_id {excerpt(r.client_id)!r} is stored in {db.path} with "
                        "another rater, image or label; nothing was imported"
                    )
                continue
            if not c.execute("SELECT 1 FROM images WHERE id = ?", (r.image_id,)).fetchone():
                raise UnknownImageError(
                    f"{path} line {k}: image {r.image_id!r} is not in {db.path}; nothing was imported"
                )
            gid = getattr(r, "group_id", None)
            gid = None if gid is None or (isinstance(gid, float) and gid != gid) else str(gid)
            prev = c.execute(
                "SELECT id FROM labels WHERE image_id = ? AND rater = ? ORDER BY id DESC LIMIT 1",
                (r.image_id, r.rater),
            ).fetchone()
            c.execute(
                "INSERT INTO labels(image_id, group_id, rater, label, created, supersedes, client_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    r.image_id,
                    gid,
                    r.rater,
                    label,
                    created,
                    prev["id"] if prev else None,
                    r.client_id,
                ),
            )
            added += 1
    return added


def _check_suffix(path: Path) -> None:
    if path.suffix not in (".csv", ".parquet"):
        raise LabelDBError(f"{path}: export / import files end in .csv or .parquet")
