"""API statistics of endpoint stages (the seed's API 통계): requests, errors and latency percentiles over time.

The gateway counts each request into the stage's current minute in memory (a counter and
a fixed histogram: no per-request allocation or I/O); the controller adds the finished
counts to the minute's row every few seconds.  Percentiles of any window come from the
summed histograms, so a window of many minutes costs as little as one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime

# Upper bounds (ms) of the latency buckets: ~12% apart from 0.1 ms to 2 min; the last catches the rest.
BUCKETS_MS: tuple[float, ...] = tuple(round(0.1 * 1.12 ** i, 4) for i in range(124)) + (float("inf"),)


@dataclass
class StageCounts:
    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_MS))

    @property
    def latency_buckets(self) -> list[int]:
        """As an ``EndpointStats`` row names them, so ``merge`` sums stored and pending counts alike."""
        return self.buckets

    def observe(self, seconds: float, failed: bool) -> None:
        self.requests += 1
        if failed:
            self.errors += 1
        self.buckets[bisect.bisect_left(BUCKETS_MS, seconds * 1000.0)] += 1


class ServingStats:
    """Counts of the current minute per stage, taken by ``drain`` to be stored."""

    def __init__(self) -> None:
        self.pending: dict[tuple[int, datetime], StageCounts] = {}

    def observe(self, stage_id: int, seconds: float, failed: bool, now: datetime) -> None:
        key = (stage_id, now.replace(second=0, microsecond=0))
        counts = self.pending.get(key)
        if counts is None:
            counts = self.pending[key] = StageCounts()
        counts.observe(seconds, failed)

    def merge(self, other: ServingStats) -> None:
        """Add another's pending counts (nginx's, read from its log off the event loop)."""
        for key, counts in other.pending.items():
            mine = self.pending.get(key)
            if mine is None:
                self.pending[key] = counts
                continue
            mine.requests += counts.requests
            mine.errors += counts.errors
            mine.buckets = [a + b for a, b in zip(mine.buckets, counts.buckets)]

    def drain(self) -> list[tuple[int, datetime, StageCounts]]:
        taken, self.pending = self.pending, {}
        return [(stage_id, minute, counts) for (stage_id, minute), counts in taken.items()]


def percentile(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) in ms from bucket counts, linear within its bucket; None without requests."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            low = BUCKETS_MS[i - 1] if i else 0.0
            high = BUCKETS_MS[i] if BUCKETS_MS[i] != float("inf") else BUCKETS_MS[i - 1] * 2
            return round(low + (high - low) * max(0.0, rank - seen) / n, 3)
        seen += n
    return None


def summarize(requests: int, errors: int, buckets: list[int]) -> dict:
    return {"requests": requests, "errors": errors,
            "p50_ms": percentile(buckets, 0.50), "p95_ms": percentile(buckets, 0.95),
            "p99_ms": percentile(buckets, 0.99)}


def merge(rows) -> tuple[int, int, list[int]]:
    """Summed (requests, errors, buckets) of ``EndpointStats`` rows (or anything with those attributes)."""
    requests = errors = 0
    buckets = [0] * len(BUCKETS_MS)
    for row in rows:
        requests += row.requests
        errors += row.errors
        for i, n in enumerate(row.latency_buckets or ()):
            if i < len(buckets):
                buckets[i] += n
    return requests, errors, buckets
