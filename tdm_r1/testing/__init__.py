"""Test and perf scaffolding: tiny random-weight pipelines, reward checkpoints written in the real
on-disk formats with random weights, and the configurations of the real models.

Used by ``tests/`` and ``benchmarks/perf/`` only: no module of tdm_r1 outside this package imports
it (``tests/project/test_architecture.py`` checks), so the product never depends on scaffolding.
"""
