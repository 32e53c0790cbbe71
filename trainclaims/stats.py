"""Statistics of timing rounds, shared by what benchmarks record and the gate that compares them
(no torch: the gate runs where only the reports are)."""

from __future__ import annotations

import statistics


def spread(values: list[float]) -> float:
    """Interquartile range over the median: 0.1 means the middle half of the rounds lies within 10%
    of the median's size."""
    if len(values) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / median
