"""Order statistics for timings: percentiles of one run, medians over repeated runs."""

from __future__ import annotations

import math
import statistics
from typing import Sequence, Tuple


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank method; ValueError if empty."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q!r} is outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median of repeated runs' figures; ValueError if empty."""
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def median_pair(pairs: Sequence[Tuple[float, float]]) -> Tuple[float, float]:
    """The (figure, baseline) pair whose ratio is the median of the pairs' ratios (the lower
    middle one for an even count), so figure / baseline is that median; ValueError if empty.

    Each pair is measured back to back, so it shares the machine's speed of the moment; on a
    machine whose speed drifts between runs, the median of per-pair ratios is steadier than
    the ratio of separate medians."""
    if not pairs:
        raise ValueError("median of no pairs")
    ordered = sorted(pairs, key=lambda pair: pair[0] / pair[1])
    return ordered[(len(ordered) - 1) // 2]
