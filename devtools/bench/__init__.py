"""Benchmarks of search and indexing (the bench-search and bench-index commands)."""
