"""Benchmarks of qb_oauth (not packaged). Run with ``make bench``."""
