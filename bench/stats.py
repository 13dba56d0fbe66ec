"""Medians of runs, as results.json records them."""

from __future__ import annotations

import statistics
from typing import Any


def summary(values: list[float], digits: int) -> dict[str, Any]:
    """The median and every run, rounded."""
    return {
        "median": round(statistics.median(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def median_ratio(numerators: list[float], denominators: list[float], digits: int) -> float:
    """The median of the per-round ratios (each against the baseline of its own round)."""
    pairs = zip(numerators, denominators, strict=True)
    return round(statistics.median(n / d for n, d in pairs), digits)
