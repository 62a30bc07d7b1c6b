"""Benchmarks: sessions per harness core (``python -m bench``) and simulator capacity (simulator_bench.py)."""
