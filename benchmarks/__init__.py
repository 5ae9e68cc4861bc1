"""Benchmark suites (YAML + loaders), installed as ``tdm_r1.benchmarks``."""
