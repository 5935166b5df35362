"""Small statistics: medians of repetitions, percentiles of latency samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the value pct% of samples are at or below)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ms_spread(values: Sequence[float], digits: int = 1) -> str:
    """min..max of repetitions given in seconds, in milliseconds: the noise, for the reader."""
    return f"{min(values) * 1e3:.{digits}f}..{max(values) * 1e3:.{digits}f} ms"
