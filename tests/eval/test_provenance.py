"""Provenance: every measured row says how it was made and whether that is the published protocol."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tdm_r1.eval import leaderboard, leaderboard_md, provenance
from tdm_r1.eval.provenance import OFFICIAL, TOY, describe
from tdm_r1.eval.report import write_report
from tdm_r1.eval.results import SUMMARY_COLUMNS
from tdm_r1.eval.runner import evaluate
from tdm_r1.registry import BENCHMARKS
from tdm_r1.testing.evalkit import Kit, kit_fixture  # noqa: F401 (fixture)

REPO_RESULTS = Path(__file__).resolve().parents[2] / "results"


def spec(name: str) -> dict:
    return BENCHMARKS.get(name).to_dict()


def test_official_geneval_needs_the_mmdet_detector_at_800_and_all_prompts() -> None:
    official = describe(spec("geneval"), [("geneval", "2-mmdet-s800x1333-correct", {})], 553)
    assert official.status == OFFICIAL
    assert official.detail.startswith("images/prompt=4; prompts=553/553; geneval@2-mmdet-s800x1333-correct")
    assert "backend=mmdet, detector_scale=800x1333" in official.detail

    port = describe(spec("geneval"), [("geneval", "2-mask2former-s800x1333-correct", {})], 553)
    assert port.status == (
        "approximate: GenEval detector is the transformers Mask2Former port, not the official mmdet checkpoint"
    )
    old = describe(spec("geneval"), [("geneval", "1-mask2former-correct", {})], 20).status
    assert old.startswith("approximate: 20 of 553 prompts")
    assert "GenEval detector input scale processor (official: shorter side 800, longer <= 1333)" in old
    custom = describe(spec("geneval"), [("geneval", "2-mmdet-s800x1333-opt0123abcd-partial", {})], 553)
    assert "score=partial" in custom.status and "non-default GenEval options" in custom.status


def test_drawbench_protocol_names_each_deviation() -> None:
    faithful = [("aesthetic", "1", {}), ("pickscore", "1", {}), ("hpsv2.1", "2", {}), ("clipscore", "1", {})]
    assert describe(spec("drawbench"), faithful, 200).status == OFFICIAL
    crop = describe(spec("drawbench"), [("hps", "1", {})], 200)  # an alias resolves to hpsv2.1
    assert crop.status == "approximate: HPS v2.1 centre-crop preprocessing (official: letterbox)"
    judge = describe(
        spec("drawbench"), [("vlm-judge", "2-CodeGoat24/UnifiedReward-7b-v1.5-tpl0123456789ab", {})], 200
    )
    assert (
        judge.status == "approximate: vlm-judge not comparable: custom/unknown template (sha256 0123456789ab)"
    )
    assert "template_sha256=0123456789ab" in judge.detail
    v1 = dict(spec("drawbench"), images_per_prompt=1, seeds=[0])
    assert describe(v1, faithful, 200).status == "approximate: 1 images per prompt (published: 5)"
    ocr = describe(spec("ocr"), [("ocr", "1-rapidocr", {})], 1018).status
    assert ocr == "approximate: OCR engine rapidocr (published numbers: PaddleOCR 2.9.1 English models)"
    assert describe(spec("ocr"), [("ocr", "1-paddleocr-2.9.1", {})], 1018).status == OFFICIAL


def test_toy_suites_are_never_comparable() -> None:
    assert describe(spec("toy-geneval"), [("geneval", "2-shapes-correct", {})], 288).status == TOY
    assert provenance.combine([OFFICIAL, "approximate: a; b", "approximate: b; c"]) == "approximate: a; b; c"
    assert provenance.combine([OFFICIAL, OFFICIAL]) == OFFICIAL
    assert provenance.combine([TOY, OFFICIAL]) == TOY


def test_every_measured_file_carries_its_protocol(kit: Kit) -> None:
    (res,) = evaluate("kit-4step", ["kit-geneval"], progress=False)
    csv = pd.read_csv(res.files.csv)
    assert list(csv.columns) == list(SUMMARY_COLUMNS)
    assert set(csv["protocol_status"]) == {TOY}  # the kit suites are toy-type sources
    assert csv["protocol"].str.match(r"images/prompt=2; prompts=12(/12)?; ").all()
    assert csv["protocol"].str.contains("kit-geneval@").all()

    lb = leaderboard.build(kit.results)
    row = lb.table[lb.table["model"] == "kit-4step"].iloc[0]
    assert row["kit-geneval:protocol"] == TOY and row["kit-geneval:protocol_detail"].startswith(
        "images/prompt=2"
    )
    md = leaderboard_md.to_markdown(lb)
    assert "| source | protocol |" in md
    assert f"| {TOY} |" in md and "Protocol of the measured rows (kit-geneval):" in md
    leaderboard_md.write(lb, kit.results)
    assert "kit-geneval:protocol" in pd.read_csv(kit.results / "leaderboard.csv").columns
    page = write_report(kit.results, lb=lb).read_text()
    assert "<th>protocol</th>" in page and '<td class="protocol" title="images/prompt=2' in page


def test_leaderboard_sections_say_official_or_approximate(tmp_path: Path) -> None:
    """Measured rows of the official suites: `official` or `approximate: why`, per section; result
    files written before the protocol columns get theirs rebuilt from meta.json."""
    root = tmp_path / "results"
    base = {c: "" for c in SUMMARY_COLUMNS} | {
        "model": "m",
        "nfe": 4,
        "n": 2212,
        "std": 0.1,
        "tdmbench_version": "0.1.0",
    }
    rows = {
        "geneval": ("overall", "geneval", "2-mmdet-s800x1333-correct", OFFICIAL),
        "drawbench": (
            "hpsv2.1",
            "hpsv2.1",
            "1",
            "approximate: HPS v2.1 centre-crop preprocessing (official: letterbox)",
        ),
    }
    for bench, (metric, reward, version, status) in rows.items():
        (root / bench).mkdir(parents=True)
        row = base | {"benchmark": bench, "metric": metric, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
        row |= {"reward": reward, "reward_version": version, "protocol": "d", "protocol_status": status}
        pd.DataFrame([row]).to_csv(root / bench / "m.csv", index=False)
    # an old-format toy result (written before the protocol columns): rebuilt from its meta.json
    shutil.copytree(REPO_RESULTS / "toy-geneval", root / "toy-geneval")
    old_csv = root / "toy-geneval" / "toy-4step.csv"
    pd.read_csv(old_csv).drop(columns=["protocol", "protocol_status"], errors="ignore").to_csv(
        old_csv, index=False
    )
    lb = leaderboard.build(root, published=tmp_path / "none.csv")
    table = lb.table.set_index("model")
    assert table.loc["m", "geneval:protocol"] == OFFICIAL
    assert table.loc["m", "drawbench:protocol"].startswith("approximate: HPS v2.1 centre-crop")
    assert table.loc["toy-4step", "toy-geneval:protocol"] == TOY
    meta = json.loads((root / "toy-geneval" / "toy-4step.meta.json").read_text())
    assert table.loc["toy-4step", "toy-geneval:protocol_detail"].startswith(
        f"images/prompt={meta['benchmark']['images_per_prompt']}"
    )
    md = leaderboard_md.to_markdown(lb)
    geneval_section = md.split("## GenEval")[1].split("##")[0]
    (m_row,) = [line for line in geneval_section.split("\n") if line.startswith("| m | 4 | measured |")]
    assert m_row.endswith("| tdmbench 0.1.0 | official |")
    assert (
        "approximate: HPS v2.1 centre-crop preprocessing (official: letterbox) |"
        in md.split("## DrawBench")[1]
    )


@pytest.mark.parametrize("name", ["geneval", "ocr", "pickscore", "drawbench"])
def test_official_suites_match_the_published_sample_counts(name: str) -> None:
    bench = BENCHMARKS.get(name)
    n, per_prompt = provenance.PUBLISHED_PROTOCOL[name]
    assert (bench.prompts.count, bench.images_per_prompt) == (n, per_prompt)
