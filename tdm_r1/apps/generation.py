"""``tdmbench generate``: prompts file -> PNGs + ``metadata.jsonl``, seeded per (prompt, image).

The seed of image j of prompt i is ``derive_seed(seed, i, j)``: any subset of a prompt file (or a
resumed run) regenerates exactly the same images. Existing images listed in ``metadata.jsonl`` are
skipped when their row matches this run (model identity, prompt, seed, sampler) and the file
decodes, so an interrupted run continues where it stopped; a folder holding another run is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdm_r1.errors import ConfigError
from tdm_r1.prompt_files import PromptRecord, read_prompts
from tdm_r1.seeds import derive_seed

if TYPE_CHECKING:
    from tdm_r1.models.adapter import FlowAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    record: PromptRecord
    image_index: int
    seed: int

    @property
    def filename(self) -> str:
        """``<prompt index>_<image index>.png`` (zero-padded: folders sort in generation order)."""
        return f"{self.record.index:05d}_{self.image_index:02d}.png"


def plan_jobs(records: list[PromptRecord], *, seed: int, images_per_prompt: int) -> list[Job]:
    if images_per_prompt < 1:
        raise ConfigError(f"images per prompt must be >= 1, got {images_per_prompt}")
    return [Job(r, j, derive_seed(seed, r.index, j)) for r in records for j in range(images_per_prompt)]


#: Metadata fields that must match for an existing image to count as this run's image.
RUN_KEYS: tuple[str, ...] = (
    "prompt",
    "seed",
    "model",
    "model_identity",
    "steps",
    "guidance",
    "solver",
    "shift",
    "height",
    "width",
)


def _image_ok(path: Path, width: Any, height: Any) -> bool:
    """The PNG decodes completely and has the recorded size (a run killed mid-write leaves a cut file)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return width is None or height is None or im.size == (int(width), int(height))
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _done(out_dir: Path, expected: dict[str, dict[str, Any]]) -> set[str]:
    """Files of this run already generated in ``out_dir``.

    ``expected``: file name -> the metadata fields (:data:`RUN_KEYS`) this run will write for it.
    An existing image counts as done only if its row matches those fields and the file decodes;
    rows of another run (other model, prompts, seed or sampler) are an error rather than a silent
    mix of two runs in one folder. ``metadata.jsonl`` is rewritten without rows whose image is
    gone or broken (those images are generated again).
    """
    meta = out_dir / "metadata.jsonl"
    if not meta.is_file():
        return set()
    kept: dict[str, str] = {}
    conflicts: list[str] = []
    broken: list[str] = []
    for lineno, line in enumerate(meta.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by an interrupted run
            continue
        name = row.get("file") if isinstance(row, dict) else None
        if not name:
            continue
        want = expected.get(name)
        if want is None:
            conflicts.append(f"{name} is not an image of this run (metadata.jsonl:{lineno})")
            continue
        diff = [k for k in RUN_KEYS if k in row and k in want and row[k] != want[k]]
        if diff:
            k = diff[0]
            conflicts.append(f"{name} was made with {k}={row[k]!r}, this run uses {k}={want[k]!r}")
            continue
        if not _image_ok(out_dir / name, row.get("width"), row.get("height")):
            if (out_dir / name).is_file():
                broken.append(name)
            continue
        kept[name] = line
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ConfigError(
            f"--out {out_dir} already holds images of another run: {conflicts[0]}{more}. "
            "Use another --out folder, or delete this one to start over"
        )
    if broken:
        log.warning("%d unreadable images in %s are generated again: %s", len(broken), out_dir, broken[:5])
    meta.write_text("".join(line + "\n" for line in kept.values()), encoding="utf-8")
    return set(kept)


def _batches(items: list[Job], size: int) -> Iterator[list[Job]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_to_dir(
    adapter: FlowAdapter,
    prompts_path: str | Path,
    out_dir: str | Path,
    *,
    model_name: str,
    seed: int = 0,
    images_per_prompt: int = 1,
    batch_size: int = 8,
    steps: int | None = None,
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate every (prompt, image) of ``prompts_path`` into ``out_dir``; returns the metadata path."""
    from tdm_r1.eval.cache import digest
    from tdm_r1.images import save_png

    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    out_dir = Path(out_dir)
    jobs = plan_jobs(read_prompts(prompts_path), seed=seed, images_per_prompt=images_per_prompt)
    spec = adapter.sampling.replace(steps=steps, guidance=guidance, height=height, width=width)
    identity = digest(adapter.config_dict())[:16]
    run = {
        "model": model_name,
        "model_identity": identity,
        "steps": spec.steps,
        "guidance": spec.guidance,
        "solver": spec.solver,
        "shift": spec.shift,
        "height": spec.height,
        "width": spec.width,
    }
    expected = {j.filename: {**run, "prompt": j.record.prompt, "seed": j.seed} for j in jobs}
    out_dir.mkdir(parents=True, exist_ok=True)
    done = _done(out_dir, expected)
    todo = [j for j in jobs if j.filename not in done]
    if done:
        log.info(
            "%d of %d images already in %s; generating %d",
            len(jobs) - len(todo),
            len(jobs),
            out_dir,
            len(todo),
        )
    nfe = spec.nfe
    meta_path = out_dir / "metadata.jsonl"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"generate {model_name}", unit="img")
    with meta_path.open("a", encoding="utf-8") as meta:
        for batch in _batches(todo, max(1, batch_size)):
            images = adapter.generate(
                [j.record.prompt for j in batch],
                [j.seed for j in batch],
                steps=spec.steps,
                guidance=spec.guidance,
                height=spec.height,
                width=spec.width,
                batch_size=len(batch),
                progress=False,
            )
            for job, image in zip(batch, images, strict=True):
                save_png(image, out_dir / job.filename)
                row = {
                    **job.record.metadata,
                    "file": job.filename,
                    "prompt": job.record.prompt,
                    "prompt_index": job.record.index,
                    "image_index": job.image_index,
                    "seed": job.seed,
                    "base_seed": seed,
                    **run,
                    "nfe": nfe,
                }
                meta.write(json.dumps(row, ensure_ascii=False) + "\n")
            meta.flush()
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return meta_path
