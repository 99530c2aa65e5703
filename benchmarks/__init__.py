"""Benchmarks: `python -m benchmarks.benchmark` (throughput, time-to-solve, memory, peers)."""
