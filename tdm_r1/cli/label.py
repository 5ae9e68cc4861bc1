"""``tdmbench label``: open (or create) a label database, register images, serve the app.

``--images DIR`` registers a folder of images as groups: by prompt when ``DIR/metadata.jsonl``
has ``file`` / ``prompt`` rows, else one group per subfolder (prompt = ``prompt.txt`` or the
folder name), else the loose images in groups of 8 with the folder name as prompt.
``--run runs/NAME`` ties the database to that training run (its ``likes`` database by default)
and refuses a database recorded for another run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError
from tdm_r1.label.db import LabelDB, LabelDBError, writable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_groups(folder: Path) -> list[tuple[str, list[Path], dict[str, Any]]]:
    """(prompt, image files, metadata) groups of a folder (see the module docstring)."""
    if not folder.is_dir():
        raise ConfigError(f"--images {folder}: no such folder")
    meta_file = folder / "metadata.jsonl"
    groups: dict[str, tuple[list[Path], dict[str, Any]]] = {}
    if meta_file.is_file():
        for k, line in enumerate(meta_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file, prompt = folder / row["file"], str(row["prompt"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{meta_file} line {k}: needs JSON with 'file' and 'prompt' ({exc})"
                ) from exc
            if not file.is_file():
                raise ConfigError(f"{meta_file} line {k}: {file} does not exist")
            groups.setdefault(prompt, ([], {k: v for k, v in row.items() if k != "file"}))[0].append(file)
        return [(p, files, meta) for p, (files, meta) in groups.items()]
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            txt = sub / "prompt.txt"
            out.append((txt.read_text().strip() if txt.is_file() else sub.name, files, {}))
    loose = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    out += [(folder.name, loose[i : i + 8], {}) for i in range(0, len(loose), 8)]
    if not out:
        raise ConfigError(f"--images {folder}: no .png / .jpg images found")
    return out


def run_database(run_dir: Path) -> tuple[str, Path | None]:
    """(run name, its likes database from config.yaml or None) of a training run folder."""
    from tdm_r1.config import load_yaml

    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"--run {run_dir}: no training run there (no config.yaml)")
    cfg = load_yaml(cfg_file)
    for name, opts in (cfg.get("reward_options") or {}).items():
        if name in ("likes", "likes-sim", "human-likes") and isinstance(opts, dict) and opts.get("db"):
            return str(opts.get("run") or cfg.get("name", run_dir.name)), Path(opts["db"])
    return str(cfg.get("name", run_dir.name)), None


def label_command(
    *,
    db: Path | None,
    images: Path | None = None,
    run: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    export: Path | None = None,
    import_: Path | None = None,
    stats: bool = False,
    echo: Any = print,
    allowed_host: list[str] | tuple[str, ...] = (),
) -> None:
    from tdm_r1.label.app import check_host

    run_name = None
    if run is not None:
        run_name, run_db = run_database(run)
        db = db or run_db or run / "likes.sqlite"
    if db is None:
        raise ConfigError("give --db FILE (a label database; created when missing) or --run runs/NAME")
    check_host(host, token)  # before anything is written
    readonly = export is not None or stats
    if db.is_file() and not readonly and not writable(db):
        raise LabelDBError(
            f"label database {db} is read-only for this user: nothing was changed; make it writable"
        )
    store = LabelDB(db, run=run_name, create=not readonly, readonly=readonly)
    if stats:
        echo(json.dumps({"db": str(db), "run": store.run, **store.stats()}))
        return
    if export is not None:
        echo(f"{store.export(export)} label rows written to {export}")
        return
    store.check_writable()
    if import_ is not None:
        echo(f"{store.import_labels(import_)} label rows imported from {import_}")
        return
    if images is not None:
        added = 0
        for prompt, files, meta in image_groups(images):
            _, new = store.add_group(prompt, [f.read_bytes() for f in files], metadata=meta, source="images")
            added += int(new)
        echo(f"{added} new group(s) registered from {images}")
    from tdm_r1.label.app import serve
    from tdm_r1.label.guard import allowed_hosts

    pending = len(store.pending(limit=10**9))
    echo(f"labelling app at http://{host}:{port} ({pending} pending group(s) in {db}; Ctrl+C stops it)")
    echo(
        f"serving the host names {', '.join(sorted(allowed_hosts(host, allowed_host)))} (--allowed-host adds one)"
    )
    serve(store, host=host, port=port, access_token=token, allowed_host=allowed_host)
