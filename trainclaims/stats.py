"""Statistics of timing rounds, shared by what benchmarks record and the gate that compares them
(no torch: the gate runs where only the reports are)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

MAD_TO_SIGMA = 1.4826  # the MAD of Gaussian noise times this is its standard deviation


def spread(values: Sequence[float]) -> float:
    """Interquartile range over the median: 0.1 means the middle half of the rounds lies within 10%
    of the median's size."""
    if len(values) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / median


def robust_cv(values: Sequence[float]) -> float | None:
    """``1.4826 * MAD / median``: the coefficient of variation, robust to a few wild values (one
    round of a busy machine, 17x the median in a real XOR-net run, would otherwise be the whole
    number); None for fewer than 2 values or a median of 0."""
    if len(values) < 2:
        return None
    median = statistics.median(values)
    if median == 0:
        return None
    mad = statistics.median(abs(v - median) for v in values)
    return MAD_TO_SIGMA * mad / abs(median)
