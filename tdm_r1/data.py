"""Official benchmark prompt files: downloaded by sha256 into ``data_dir()``.

The project does not commit copies of third-party prompt files. ``tdmbench data fetch NAME``
downloads each from a pinned commit and checks its sha256; ``TDMBENCH_DATA_DIR`` points at an
existing copy (the tests use ``../shared/data``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tdm_r1.errors import MissingDataError, UnknownNameError
from tdm_r1.paths import data_dir

log = logging.getLogger(__name__)

#: The six GenEval tasks (metadata ``tag``), in the order of the GenEval paper's tables.
GENEVAL_TASKS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)

_GENEVAL = "https://raw.githubusercontent.com/djghosh13/geneval/af4902f24d3ca90ebbb446dd9891a59e0f82725f"
_FLOWGRPO = "https://raw.githubusercontent.com/yifan123/flow_grpo/ac4c86e8cae021841f1fde853d340e0db67690dd"
_DGPO = "https://raw.githubusercontent.com/Luo-Yihong/DGPO/01ceb4b83c0bbc55d96246fe1b6d9a3d4749ebd6"


@dataclass(frozen=True)
class DataFile:
    name: str
    relpath: str
    url: str
    sha256: str
    description: str
    license: str


DATA_FILES: dict[str, DataFile] = {
    f.name: f
    for f in [
        DataFile(
            "geneval",
            "geneval/evaluation_metadata.jsonl",
            f"{_GENEVAL}/prompts/evaluation_metadata.jsonl",
            "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13",
            "GenEval: 553 prompts with metadata (6 tasks)",
            "MIT",
        ),
        DataFile(
            "geneval-objects",
            "geneval/object_names.txt",
            f"{_GENEVAL}/prompts/object_names.txt",
            "608f6a0e5c8ca1c7a92b818430141fe268c85b7930b50f4160f1d65893b5bacd",
            "GenEval: the 80 COCO class names",
            "MIT",
        ),
        DataFile(
            "geneval-unseen",
            "geneval/unseen_objects_test_metadata.jsonl",
            f"{_FLOWGRPO}/dataset/geneval_unseen_objects/test_metadata.jsonl",
            "174536b49af23b0e2abc4e3215fce5d375de13d6040a50642709240a76dc1a24",
            "GenEval unseen-object split (Flow-GRPO), 1024 lines",
            "MIT",
        ),
        DataFile(
            "ocr",
            "ocr/test.txt",
            f"{_FLOWGRPO}/dataset/ocr/test.txt",
            "4dd8caf3ab6ade73bd376c7d14c6ca49b6eacfb1bd321e22c40714ae4a98d4dc",
            "OCR test prompts (Flow-GRPO / TDM-R1), 1018",
            "MIT",
        ),
        DataFile(
            "drawbench",
            "drawbench/test.txt",
            f"{_DGPO}/dataset/drawbench/test.txt",
            "9006b98feabb94b28a2bc0c88de42fd4f31a9ec3c2a19e308a02c5385b7172f0",
            "DrawBench: 200 unique prompts (x5 lines)",
            "DrawBench prompts (Imagen)",
        ),
        DataFile(
            "pickscore",
            "pickscore/test.txt",
            f"{_FLOWGRPO}/dataset/pickscore/test.txt",
            "d75c025fa451866e70f7e36243f7cdd93095523cb51f5f9651f2ce3236d20262",
            "Pick-a-Pic v1 test captions, 2048 (unfiltered)",
            "MIT (repo); captions from Pick-a-Pic",
        ),
    ]
}


def data_file(name: str) -> DataFile:
    if name not in DATA_FILES:
        import difflib

        close = difflib.get_close_matches(name, list(DATA_FILES), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"Unknown data file {name!r}.{hint} Available: {', '.join(DATA_FILES)}")
    return DATA_FILES[name]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_path(name: str, *, verify: bool = True) -> Path:
    """Path of a fetched data file; raises :class:`MissingDataError` naming the fetch command."""
    f = data_file(name)
    path = data_dir() / f.relpath
    if not path.is_file():
        raise MissingDataError(
            f"data file {name!r} ({f.description}) is not at {path}. Fetch it with "
            f"`tdmbench data fetch {name}`, or set TDMBENCH_DATA_DIR to a folder that holds {f.relpath}."
        )
    if verify:
        got = sha256_of(path)
        if got != f.sha256:
            raise MissingDataError(
                f"data file {path} has sha256 {got}, expected {f.sha256}: it is corrupt or a different "
                f"version. Delete it and run `tdmbench data fetch {name}`."
            )
    return path


def fetch(name: str, *, force: bool = False, timeout: float = 30.0) -> Path:
    """Download ``name`` into ``data_dir()`` (atomic write, sha256 checked)."""
    f = data_file(name)
    dest = data_dir() / f.relpath
    if dest.is_file() and not force and sha256_of(dest) == f.sha256:
        log.info("%s already present at %s", name, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", name, f.url)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(f.url, timeout=timeout) as resp:  # noqa: S310 (pinned https URL)
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    tmp.write(chunk)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise MissingDataError(
                f"could not download {name!r} from {f.url}: {exc}. Copy the file to {dest} by hand, "
                f"or set TDMBENCH_DATA_DIR to a folder that holds {f.relpath}."
            ) from exc
    got = sha256_of(tmp_path)
    if got != f.sha256:
        tmp_path.unlink(missing_ok=True)
        raise MissingDataError(
            f"downloaded {name!r} has sha256 {got}, expected {f.sha256}; nothing was saved"
        )
    os.replace(tmp_path, dest)
    return dest


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines (prompt files may lack a final newline)."""
    from tdm_r1.errors import read_text

    return [line.strip() for line in read_text(path, "prompts file").splitlines() if line.strip()]
