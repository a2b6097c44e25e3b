"""Benchmarks run as ``python -m interp.bench NAME``; each prints ratios measured side by side."""

__all__: list[str] = []
