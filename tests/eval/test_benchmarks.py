from __future__ import annotations

import collections
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tdm_r1.cli import app
from tdm_r1.errors import ConfigError, MissingDataError
from tdm_r1.eval.benchmark import GENEVAL_TASKS, load_benchmark
from tdm_r1.registry import BENCHMARKS

SUITES = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_suite_yaml_loads_strictly_and_is_registered() -> None:
    files = sorted(SUITES.glob("*.yaml"))
    names = {load_benchmark(f).name for f in files}
    assert names == {
        "geneval",
        "ocr",
        "drawbench",
        "pickscore",
        "toy-geneval",
        "toy-ocr",
        "toy-geneval-arena",
        "toy-ocr-arena",
        "toy-geneval-rl",
        "toy-ocr-rl",
    }
    assert {f.stem for f in files} == names  # file name = benchmark name
    assert names <= set(BENCHMARKS.names())
    geneval = BENCHMARKS.get("geneval")
    assert geneval.images_per_prompt == 4 and geneval.seeds == [0, 1, 2, 3]
    assert [u.aggregate for u in geneval.in_domain] == ["geneval"]
    drawbench = BENCHMARKS.get("drawbench")
    assert not drawbench.in_domain
    assert [u.name for u in drawbench.out_of_domain] == [
        "aesthetic",
        "pickscore",
        "hpsv2.1",
        "imagereward",
        "clipscore",
        "vlm-judge",
    ]
    assert [u.optional for u in drawbench.out_of_domain] == [False] * 5 + [True]
    toy = BENCHMARKS.get("toy-geneval")
    assert toy.in_domain[0].options == {"backend": "shapes", "score": "correct"}


def test_official_suites_read_the_right_counts(shared_data: Path) -> None:
    geneval = BENCHMARKS.get("geneval")
    prompts = geneval.load_prompts()
    assert len(prompts) == 553
    items = geneval.work_items()
    assert len(items) == 2212
    assert len({(it.prompt.id, it.seed) for it in items}) == 2212
    tags = collections.Counter(p.metadata["tag"] for p in prompts)
    assert tags == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    assert set(tags) == set(GENEVAL_TASKS)
    assert prompts[0].text == "a photo of a bench"
    assert prompts[0].metadata["include"] == [{"class": "bench", "count": 1}]

    assert len(BENCHMARKS.get("ocr").work_items()) == 1018
    assert len(BENCHMARKS.get("pickscore").work_items()) == 2048
    draw = BENCHMARKS.get("drawbench").load_prompts()
    assert len(draw) == 200 and len({p.text for p in draw}) == 200
    lines = (shared_data / "drawbench" / "test.txt").read_text().splitlines()
    assert draw[0].text == lines[0].strip()
    assert [p.text for p in draw] == list(dict.fromkeys(line.strip() for line in lines if line.strip()))


def test_drawbench_follows_the_published_5_images_per_prompt(shared_data: Path) -> None:
    """The published file lists each prompt 5 times (one image per line): 200 x 5 = 1000 images,
    each prompt with 5 distinct seeds (new images, not copies)."""
    lines = [line.strip() for line in (shared_data / "drawbench" / "test.txt").read_text().splitlines()]
    counts = {t: lines.count(t) for t in set(lines)}
    assert len(lines) == 1000 and set(counts.values()) == {5}
    bench = BENCHMARKS.get("drawbench")
    assert bench.version == "2" and bench.images_per_prompt == 5
    items = bench.work_items()
    assert len(items) == len(lines) == 1000
    per_prompt: dict[str, list[int]] = {}
    for it in items:
        per_prompt.setdefault(it.prompt.text, []).append(it.seed)
    assert set(per_prompt) == set(lines)
    assert all(len(seeds) == 5 == len(set(seeds)) for seeds in per_prompt.values())


def test_limit_takes_the_first_prompts(shared_data: Path) -> None:
    geneval = BENCHMARKS.get("geneval")
    full = geneval.load_prompts()
    items = geneval.work_items(limit=3)
    assert len(items) == 12
    assert [it.prompt for it in items[::4]] == full[:3]
    assert [(it.index, it.sample, it.seed) for it in items[:5]] == [
        (0, 0, 0),
        (0, 1, 1),
        (0, 2, 2),
        (0, 3, 3),
        (1, 0, 0),
    ]
    with pytest.raises(ConfigError, match="--limit must be >= 1"):
        geneval.load_prompts(limit=0)


def test_missing_data_file_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDMBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(MissingDataError, match="tdmbench data fetch ocr"):
        BENCHMARKS.get("ocr").load_prompts()


def test_bad_suite_yaml_is_a_teaching_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nversion: '1'\nprompts: {type: file, data: ocr}\nin_domain: [{name: ocr}]\nimage_per_prompt: 2\n"
    )
    with pytest.raises(ConfigError, match="Did you mean 'images_per_prompt'"):
        load_benchmark(path)
    path.write_text(
        "name: bad\nversion: '1'\nprompts: {type: file, data: ocr}\nimages_per_prompt: 2\nseeds: [1]\nin_domain: [{name: ocr}]\n"
    )
    with pytest.raises(ConfigError, match="1 seeds for images_per_prompt=2"):
        load_benchmark(path)
    path.write_text("name: bad\nversion: '1'\nprompts: {type: toy}\nin_domain: [{name: ocr}]\n")
    with pytest.raises(ConfigError, match="needs prompts.generator"):
        load_benchmark(path)
    path.write_text(
        "name: bad\nversion: '1'\nprompts: {type: file, data: ocr}\n"
        "in_domain: [{name: geneval, aggregate: geneval}, {name: x, metric: counting}]\n"
    )
    with pytest.raises(ConfigError, match=r"metric names \['counting'\] are produced twice"):
        load_benchmark(path)


def test_ls_benchmarks_lists_the_suites() -> None:
    result = CliRunner().invoke(app, ["ls", "benchmarks"])
    assert result.exit_code == 0, result.output
    for name in ("geneval", "ocr", "drawbench", "pickscore", "toy-geneval", "toy-ocr"):
        assert name in result.output
    assert "553" in result.output and "1018" in result.output


def test_toy_suites_read_the_toy_grammar() -> None:
    geneval = BENCHMARKS.get("toy-geneval").load_prompts()
    assert len(geneval) == 6 * 48 and all("tag" in p.metadata for p in geneval)
    assert {p.metadata["tag"] for p in geneval} == set(GENEVAL_TASKS)
    ocr = BENCHMARKS.get("toy-ocr").load_prompts()
    assert len(ocr) == 64 and all("target_text" in p.metadata for p in ocr)
    assert len(BENCHMARKS.get("toy-ocr").work_items()) == 512  # resolves a paired OCR delta of 0.03
    assert len({p.id for p in geneval}) == len(geneval)


@pytest.mark.parametrize("name", ["toy-geneval", "toy-ocr"])
def test_repeated_toy_prompts_get_new_images(name: str) -> None:
    """The toy suites repeat prompts to weigh tasks equally; each repeat must be a new image."""
    items = BENCHMARKS.get(name).work_items()
    pairs = [(it.prompt.text, it.seed) for it in items]
    assert len(set(pairs)) == len(pairs)
    assert len({it.prompt.text for it in items}) < len(items) // 2  # prompts do repeat
    assert all("seed_offset" not in it.prompt.metadata for it in items)


def test_a_generator_that_repeats_a_prompt_with_one_seed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rep.yaml"
    path.write_text(
        "name: rep\nversion: '1'\nprompts: {type: toy, generator: 'test_benchmarks:_repeats'}\n"
        "in_domain: [{name: jpeg-compressibility}]\n"
    )
    with pytest.raises(ConfigError, match="seed_offset"):
        load_benchmark(path).load_prompts()


def _repeats() -> list[dict]:
    return [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "x"}]
