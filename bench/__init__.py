"""Benchmarks: figures, not pass/fail. Run each from the repository root as
``python -m bench.NAME --help``."""
