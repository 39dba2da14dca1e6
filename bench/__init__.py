"""Benchmarks: each prints one JSON object; targets live here, never in tests."""
