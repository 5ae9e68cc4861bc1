"""``tdmbench generate``: prompts file -> PNGs + ``metadata.jsonl``, seeded per (prompt, image).

The seed of image j of prompt i is ``derive_seed(seed, i, j)``: any subset of a prompt file (or a
resumed run) regenerates exactly the same images. Existing images listed in ``metadata.jsonl`` are
skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdm_r1.errors import ConfigError
from tdm_r1.sampling import derive_seed

if TYPE_CHECKING:
    from tdm_r1.models.adapter import FlowAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a prompts file: its 0-based index, text and extra metadata (JSONL fields)."""

    index: int
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """``.txt`` (one prompt per non-empty line) or ``.jsonl`` (a ``prompt`` field; other fields kept)."""
    from tdm_r1.errors import read_text

    path = Path(path)
    text = read_text(path, "prompts file")
    records: list[PromptRecord] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ConfigError(f"{path}:{lineno}: each line needs a string field 'prompt'")
            meta = {k: v for k, v in row.items() if k != "prompt"}
            records.append(PromptRecord(len(records), row["prompt"], meta))
    elif path.suffix in (".txt", ""):
        for line in text.splitlines():
            if line.strip():
                records.append(PromptRecord(len(records), line.strip()))
    else:
        raise ConfigError(f"prompts file {path}: use .txt (one prompt per line) or .jsonl (a 'prompt' field)")
    if not records:
        raise ConfigError(f"prompts file {path} has no prompts")
    return records


@dataclass(frozen=True)
class Job:
    record: PromptRecord
    image_index: int
    seed: int

    @property
    def filename(self) -> str:
        return f"{self.record.index:05d}_{self.image_index:02d}.png"


def plan_jobs(records: list[PromptRecord], *, seed: int, images_per_prompt: int) -> list[Job]:
    if images_per_prompt < 1:
        raise ConfigError(f"images per prompt must be >= 1, got {images_per_prompt}")
    return [Job(r, j, derive_seed(seed, r.index, j)) for r in records for j in range(images_per_prompt)]


def _done(out_dir: Path) -> set[str]:
    """Files already generated; ``metadata.jsonl`` is rewritten without rows whose image is gone."""
    meta = out_dir / "metadata.jsonl"
    if not meta.is_file():
        return set()
    kept: dict[str, str] = {}
    for line in meta.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            name = json.loads(line).get("file")
        except json.JSONDecodeError:  # a line cut by an interrupted run
            continue
        if name and (out_dir / name).is_file():
            kept[name] = line
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
    from tdm_r1.images import save_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(read_prompts(prompts_path), seed=seed, images_per_prompt=images_per_prompt)
    done = _done(out_dir)
    todo = [j for j in jobs if j.filename not in done]
    if done:
        log.info(
            "%d of %d images already in %s; generating %d",
            len(jobs) - len(todo),
            len(jobs),
            out_dir,
            len(todo),
        )
    spec = adapter.sampling.replace(steps=steps, guidance=guidance, height=height, width=width)
    nfe = adapter.schedule(spec.steps, height=spec.height, width=spec.width).passes * (
        2 if spec.guidance != 1.0 else 1
    )
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
                    "model": model_name,
                    "steps": spec.steps,
                    "guidance": spec.guidance,
                    "solver": spec.solver,
                    "shift": spec.shift,
                    "height": spec.height,
                    "width": spec.width,
                    "nfe": nfe,
                }
                meta.write(json.dumps(row, ensure_ascii=False) + "\n")
            meta.flush()
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return meta_path
