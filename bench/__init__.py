"""Benchmarks: each writes JSON + Markdown (+ plots) under results/; not timed tests."""
