"""Benchmark drivers: each starts its own servers, measures, and writes a report under docs/ (make bench, cli-bench, soak)."""
