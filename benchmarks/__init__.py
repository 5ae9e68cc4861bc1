"""Benchmark suites (YAML files beside this module), installed as ``tdm_r1.benchmarks``.

The registry imports this package on the first ``BENCHMARKS`` lookup; importing it registers one
:class:`~tdm_r1.eval.benchmark.Benchmark` per ``*.yaml`` file here (registration is the purpose of
the import, as with the ``@register_*`` decorators elsewhere). Nothing reads prompt files until a
benchmark's prompts are asked for.
"""

from __future__ import annotations

from pathlib import Path

from tdm_r1.eval.benchmark import Benchmark, load_benchmark
from tdm_r1.registry import BENCHMARKS

SUITE_DIR = Path(__file__).resolve().parent


def suite_files() -> list[Path]:
    return sorted(SUITE_DIR.glob("*.yaml"))


def register_all() -> list[Benchmark]:
    suites = [load_benchmark(path) for path in suite_files()]
    for suite in suites:
        BENCHMARKS.add(suite.name, suite)
    return suites


register_all()
