"""Percentiles for the benchmarks' reports (one definition for every bench)."""

from __future__ import annotations

import numpy as np


def percentile(values: list[float], q: float, digits: int | None = None) -> float:
    """The ``q``-th percentile (0–100, linear interpolation); NaN when there are no values."""
    if not values:
        return float("nan")
    v = float(np.percentile(values, q))
    return round(v, digits) if digits is not None else v
