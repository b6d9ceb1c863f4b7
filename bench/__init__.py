"""Benchmarks: `python -m bench` writes bench/results.json and bench/results.md."""
