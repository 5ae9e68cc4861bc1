"""A static HTML report: ``results/report/index.html``.

The page holds the leaderboard (one table per benchmark, measured and reported rows, ★ for
in-domain metrics), the figures, and for each benchmark an image grid, prompts x models, of the
first sample of the first prompts. Everything it shows is copied next to it (``plots/``,
``thumbs/``) and referenced by relative paths, so the folder can be opened from disk, zipped or
served as it is. Images come from the evaluation cache through each run's ``samples.parquet``; a
run whose images are no longer cached shows a note instead of a picture.

A small script on the page marks images that fail to load (``class="broken"``) and records the
counts in ``<body data-images-total data-images-loaded>``, which the tests read back after
rendering the page in headless Chromium.
"""

from __future__ import annotations

import html
import logging
import shutil
from pathlib import Path

from tdm_r1 import __version__
from tdm_r1.csv_files import read_parquet
from tdm_r1.eval.cache import ImageCache, atomic_write_text
from tdm_r1.eval.formatting import arrow, fmt, fmt_nfe
from tdm_r1.eval.leaderboard import Leaderboard, benchmarks_of, build, split_column
from tdm_r1.eval.leaderboard_md import TITLES
from tdm_r1.eval.provenance import protocol_column, protocol_status
from tdm_r1.eval.results import NOT_BENCHMARKS
from tdm_r1.paths import results_dir as default_results_dir

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.reported td { color: #666; font-style: italic; }
td.in-domain { background: #fdebd0; font-weight: bold; }
.grid td { vertical-align: top; text-align: center; max-width: 160px; }
.grid th.prompt { text-align: left; font-weight: normal; max-width: 260px; }
.grid img { image-rendering: pixelated; display: block; margin: auto; }
.grid .scores { font-size: 11px; color: #555; }
img.broken { outline: 3px solid red; }
figure { display: inline-block; margin: 0.5em; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = 0;
  imgs.forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; } else { img.classList.add('broken'); }
  });
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
});
"""


def _leaderboard_html(lb: Leaderboard, kind: str) -> str:
    """One table per benchmark with the rows of ``kind`` ("measured" or "reported")."""
    source_ids = {s: i + 1 for i, s in enumerate(lb.sources)}
    css = "leaderboard" if kind == "measured" else "published"
    parts = []
    for bench in benchmarks_of(lb.metrics):
        cols = [c for c in lb.metrics if split_column(c)[0] == bench]
        rows = lb.table[lb.table[cols].notna().any(axis=1) & (lb.table["kind"] == kind)]
        if rows.empty:
            continue
        head = "".join(
            f"<th>{html.escape(split_column(c)[1])} {arrow(lb.higher_is_better[c])}</th>" for c in cols
        )
        body = []
        for _, r in rows.iterrows():
            marked = set(lb.in_domain.get(r["model"], [])) if r["kind"] == "measured" else set()
            cells = []
            for c in cols:
                text = fmt(r[c], as_published=r["kind"] == "reported")
                if c in marked and text:
                    cells.append(f'<td class="num in-domain">{text} ★</td>')
                else:
                    cells.append(f'<td class="num">{text}</td>')
            nfe = fmt_nfe(r["nfe"])
            src = r["source"] if r["kind"] == "measured" else f"[{source_ids[r['source']]}]"
            detail = r.get(protocol_column(bench, detail=True))
            title = f' title="{html.escape(detail)}"' if isinstance(detail, str) and detail else ""
            body.append(
                f'<tr class="{r["kind"]}"><td>{html.escape(str(r["model"]))}</td><td class="num">{nfe}</td>'
                f"<td>{r['kind']}</td>{''.join(cells)}<td>{html.escape(str(src))}</td>"
                f'<td class="protocol"{title}>{html.escape(protocol_status(r, bench))}</td></tr>'
            )
        parts.append(
            f"<h3>{html.escape(TITLES.get(bench, bench))}</h3>"
            f'<table class="{css}" data-benchmark="{html.escape(bench)}">'
            f"<thead><tr><th>model</th><th>NFE</th><th>kind</th>{head}<th>source</th><th>protocol</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    if lb.sources and kind == "reported":
        items = "".join(
            f"<li>{html.escape(s)}{' (secondary source)' if lb.sources[s] else ''}</li>" for s in source_ids
        )
        parts.append(f"<h3>Sources of reported numbers</h3><ol>{items}</ol>")
    if parts:
        return "\n".join(parts)
    if kind == "measured":
        return "<p>No results yet: run <code>tdmbench eval</code>.</p>"
    return "<p>No published numbers (results/reference/published.csv).</p>"


def _runs_html(runs_root: Path, out: Path, limit: int = 6) -> str:
    """The newest training runs' reward curves (``runs/<name>/curves.png``), copied next to the page."""
    if not runs_root.is_dir():
        return ""
    curves = sorted(runs_root.glob("*/curves.png"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
    if not curves:
        return ""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    figs = []
    for path in curves:
        name = path.parent.name
        shutil.copyfile(path, out / "runs" / f"{name}.png")
        figs.append(
            f'<figure><img src="runs/{html.escape(name)}.png" alt="reward curves of {html.escape(name)}" '
            f'style="max-width:520px"><figcaption>{html.escape(name)}</figcaption></figure>'
        )
    return f"<h2>Training runs: reward curves</h2>\n{''.join(figs)}"


def _arena_html(lb: Leaderboard, root: Path, out: Path) -> str:
    """The RL method arena: its tables, and its curves and image grids copied next to the page."""
    if not lb.arena:
        return ""
    from tdm_r1.eval.arena_table import ARENA_DIR, to_html

    figs = []
    for reward in lb.arena:
        for kind in ("curves", "grid"):
            src = root / ARENA_DIR / f"{reward}.{kind}.png"
            if src.is_file():
                (out / "arena").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out / "arena" / src.name)
                figs.append(
                    f'<figure><img src="arena/{html.escape(src.name)}" alt="arena {html.escape(reward)} {kind}" '
                    f'style="max-width:900px"><figcaption>trained on toy {html.escape(reward)}: {kind}</figcaption></figure>'
                )
    return (
        "<h2>RL method arena</h2><p>RL methods trained from the toy models at an equal reward-evaluation "
        "budget (<code>tdmbench arena</code>); each delta is paired against the run's start model (95% CI). "
        "The image grids show what the means hide: blur, collapse, reward hacking.</p>"
        f"{to_html(lb.arena)}{''.join(figs)}"
    )


def _thumbnail(src: Path, dest: Path, size: int) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        scale = size / max(im.size)
        new = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
        im.resize(new, resample).save(dest, format="PNG")


def _grids_html(root: Path, out: Path, cache: ImageCache, n_prompts: int, size: int) -> str:
    thumbs = out / "thumbs"
    parts = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in NOT_BENCHMARKS)
    for folder in folders:
        runs = sorted(folder.glob("*.samples.parquet"))
        if not runs:
            continue
        tables = {
            p.name.removesuffix(".samples.parquet"): read_parquet(p, "per-sample results file") for p in runs
        }
        first = next(iter(tables.values()))
        prompt_ids = list(dict.fromkeys(first["prompt_id"]))[:n_prompts]
        prompts = dict(zip(first["prompt_id"], first["prompt"], strict=False))
        head = "".join(f"<th>{html.escape(m)}</th>" for m in tables)
        body = []
        for pid in prompt_ids:
            cells = []
            for df in tables.values():
                rows = df[(df["prompt_id"] == pid) & (df["sample"] == 0)]
                if rows.empty:
                    cells.append("<td>(not evaluated)</td>")
                    continue
                key = str(rows["image_key"].iloc[0])
                scores = " · ".join(
                    f"{m}: {fmt(s)}" for m, s in zip(rows["metric"], rows["score"], strict=True)
                )
                entry = cache.get(key)
                if entry is None:
                    cells.append(
                        f'<td><div class="scores">image not in cache<br>{html.escape(scores)}</div></td>'
                    )
                    continue
                name = f"{key[:24]}.png"
                if not (thumbs / name).is_file():
                    _thumbnail(entry.path, thumbs / name, size)
                cells.append(
                    f'<td><img src="thumbs/{name}" width="{size}" alt="{html.escape(prompts[pid][:80])}">'
                    f'<div class="scores">{html.escape(scores)}</div></td>'
                )
            body.append(f'<tr><th class="prompt">{html.escape(prompts[pid])}</th>{"".join(cells)}</tr>')
        parts.append(
            f"<h3>{html.escape(folder.name)}: first {len(prompt_ids)} prompts, sample 0</h3>"
            f'<table class="grid" data-benchmark="{html.escape(folder.name)}"><thead><tr><th>prompt</th>'
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )
    return "\n".join(parts) if parts else "<p>No per-sample files (<code>*.samples.parquet</code>) found.</p>"


def write_report(
    root: Path | None = None,
    *,
    lb: Leaderboard | None = None,
    cache_root: Path | None = None,
    n_prompts: int = 6,
    thumb_size: int = 128,
    runs_root: Path | None = None,
) -> Path:
    """Build ``<root>/report/`` (index.html, plots/, runs/, thumbs/) and return the path of index.html.

    The page puts the user's own work first: the measured models, the reward curves of the newest
    training runs (``runs_root``, default ``$TDMBENCH_RUNS``), the image grids and the figures;
    the published numbers follow as context.
    """
    from tdm_r1.eval.plots import write_all
    from tdm_r1.paths import runs_dir

    root = root or default_results_dir()
    lb = lb if lb is not None else build(root)
    out = root / "report"
    if (out / "thumbs").is_dir():
        shutil.rmtree(out / "thumbs")
    (out / "thumbs").mkdir(parents=True)
    figures = write_all(lb, out / "plots")
    figs = "".join(
        f'<figure><img src="plots/{p.name}" alt="{html.escape(p.stem)}" style="max-width:420px"></figure>'
        for p in figures
    )
    grids = _grids_html(root, out, ImageCache(cache_root), n_prompts, thumb_size)
    runs = _runs_html(runs_root if runs_root is not None else runs_dir(), out)
    arena = _arena_html(lb, root, out)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tdmbench report</title>
<style>{STYLE}</style></head>
<body>
<h1>tdmbench report</h1>
<p>Generated by tdmbench {html.escape(__version__)} from <code>{html.escape(str(root))}</code>.
Your measured models come first, then your training runs, image grids and figures; published numbers
(grey, italic, numbered sources) follow as context. ↑/↓: higher/lower is better; ★: in-domain metric
of an RL model. Protocol: <code>official</code> when a measured row follows the protocol of the
published numbers, else <code>approximate: why</code> (hover for the reward engines, detector scale,
template hash and images per prompt); toy-world rows are not comparable to published ones.</p>
<h2>Measured models</h2>
{_leaderboard_html(lb, "measured")}
{runs}
{arena}
<h2>Images</h2>
{grids}
<h2>Figures</h2>
{figs or "<p>No figures (no measured results).</p>"}
<h2>Published numbers (context)</h2>
{_leaderboard_html(lb, "reported")}
<script>{SCRIPT}</script>
</body></html>
"""
    index = out / "index.html"
    atomic_write_text(index, page)
    log.info("wrote %s", index)
    return index
