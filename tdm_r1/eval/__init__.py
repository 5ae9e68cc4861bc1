"""Evaluation: benchmarks, the cached and sharded runner, tables, figures and the report.

For notebooks, the main entry points return pandas DataFrames::

    from tdm_r1 import eval as tev
    results = tev.evaluate("toy-4step", ["toy-geneval"])   # list of EvalResult(.summary, .samples)
    tev.read_summaries()                                    # every results/<benchmark>/<model>.csv
    tev.read_samples("toy-geneval", "toy-4step")            # one run's per-sample table
    tev.build_leaderboard().table                           # measured + reported entries

Attributes are imported on first use, so ``import tdm_r1.eval`` stays cheap.
"""

from __future__ import annotations

from tdm_r1.registry import lazy_attributes

#: Public attributes, imported on first use.
_EXPORTS = {
    "evaluate": "tdm_r1.eval.runner:evaluate",
    "EvalResult": "tdm_r1.eval.runner:EvalResult",
    "read_summaries": "tdm_r1.eval.results:read_summaries",
    "read_samples": "tdm_r1.eval.results:read_samples",
    "read_meta": "tdm_r1.eval.results:read_meta",
    "build_leaderboard": "tdm_r1.eval.leaderboard:build",
    "Leaderboard": "tdm_r1.eval.leaderboard:Leaderboard",
    "write_report": "tdm_r1.eval.report:write_report",
    "Benchmark": "tdm_r1.eval.benchmark:Benchmark",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_attributes(__name__, _EXPORTS)
