"""Percentiles of one run, and the median, min and max of repeated runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0-100), linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """Median, min and max of repeated runs (and the runs themselves); None for no runs."""

    median: float | None
    min: float | None
    max: float | None
    runs: list[float] = field(default_factory=list)


def summary(values: Sequence[float], digits: int = 3) -> Summary:
    """The :class:`Summary` of ``values``, rounded to ``digits``."""
    if not values:
        return Summary(None, None, None, [])
    return Summary(
        median=round(statistics.median(values), digits),
        min=round(min(values), digits),
        max=round(max(values), digits),
        runs=[round(v, digits) for v in values],
    )


@dataclass(frozen=True)
class Latency:
    """Latency percentiles and mean of one run, in milliseconds."""

    p50: float
    p95: float
    p99: float
    mean: float


def latency(seconds: Sequence[float]) -> Latency:
    """The :class:`Latency` of request times given in seconds."""
    ms = [s * 1000 for s in seconds]
    return Latency(
        p50=percentile(ms, 50),
        p95=percentile(ms, 95),
        p99=percentile(ms, 99),
        mean=statistics.fmean(ms) if ms else 0.0,
    )
