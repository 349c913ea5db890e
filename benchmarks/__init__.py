"""Benchmarks for DISCOVR: encoder vs VideoMAE, hardware efficiency, pretraining step and data loading.

Run them all with `make bench` (`python -m benchmarks.run_all`), which writes `docs/benchmarks.md`.
They are not part of `make test`; `tests/test_benchmarks_smoke.py` runs each at a toy size.
"""
