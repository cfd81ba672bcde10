"""A Prometheus histogram: fixed buckets, observed from one thread (the store's writer, or the loop), read
from the loop by a scrape.

The danger is a torn read: the observer may add while a scrape reads. Each observation is one increment
of a bucket's count and then of the total, and a scrape copies the counts once, so the count it writes
(the `+Inf` bucket, `_count`) is always the sum of the buckets it writes; `_sum` may lead or lag by the
one observation in flight, which Prometheus tolerates.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from agentpulse.metrics.exposition import Family, Labels, MetricType, bucket_bound

# Seconds, for work measured in milliseconds to seconds (a commit, a publish round trip).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Rows in one commit: one agent to the whole 200,000-agent fleet.
SIZE_BUCKETS = (1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        bounds = [float(bound) for bound in buckets if not math.isinf(bound)]
        if bounds != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bucket bounds must be increasing and distinct: {buckets!r}")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    def add_to(self, family: Family, labels: Labels = ()) -> None:
        """This histogram's `_bucket` (cumulative, `le` last), `_sum` and `_count` samples, into `family`."""
        if family.type is not MetricType.HISTOGRAM:
            raise ValueError(f"{family.name} is not a histogram")
        counts = list(self._counts)  # one copy: the buckets and the count agree
        total = self.sum
        cumulative = 0
        for bound, count in zip(self.bounds, counts, strict=False):
            cumulative += count
            family.add(cumulative, (*labels, ("le", bucket_bound(bound))), "_bucket")
        cumulative += counts[-1]
        family.add(cumulative, (*labels, ("le", "+Inf")), "_bucket")
        family.add(total, labels, "_sum")
        family.add(cumulative, labels, "_count")
