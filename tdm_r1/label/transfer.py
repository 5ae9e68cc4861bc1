"""Label exports and imports: every label row (history included) to and from ``.csv`` / ``.parquet``.

An export holds the label rows, not the images: an import needs the images in the target database
already (the same rollout registered there), and adds each row once (``client_id`` is unique).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tdm_r1.label.records import LabelDBError, UnknownImageError

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
    df = pd.read_csv(path, dtype={"client_id": str}) if path.suffix == ".csv" else pd.read_parquet(path)
    missing = {"image_id", "rater", "label", "created", "client_id"} - set(df.columns)
    if missing:
        raise LabelDBError(f"{path} lacks the column(s) {sorted(missing)} of a label export")
    added = 0
    with db.transaction() as c:
        for k, r in enumerate(df.itertuples(index=False), start=2):
            label = None if pd.isna(r.label) else int(r.label)
            if label not in (0, 1, None) or not isinstance(r.rater, str) or not r.rater.strip():
                raise LabelDBError(f"{path} line {k}: bad label {r.label!r} or rater {r.rater!r}")
            if c.execute("SELECT 1 FROM labels WHERE client_id = ?", (r.client_id,)).fetchone():
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
                    float(r.created),
                    prev["id"] if prev else None,
                    r.client_id,
                ),
            )
            added += 1
    return added


def _check_suffix(path: Path) -> None:
    if path.suffix not in (".csv", ".parquet"):
        raise LabelDBError(f"{path}: export / import files end in .csv or .parquet")
