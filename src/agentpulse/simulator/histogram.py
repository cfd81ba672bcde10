"""Ack latencies in a fixed-size log-linear histogram: exact below 128 us, then at most 1.6 % off.

Fixed size so a long run does not grow it, and mergeable so the parent can add up its processes'.
`since()` gives the window between two copies, for the progress line and the steady-state figures.
"""

from __future__ import annotations

import math
from typing import Final


def _bucket(us: int) -> int:
    """Exact below 128 us, then 64 buckets per power of two: at most 1.6 % off."""
    if us < 128:
        return us
    shift = us.bit_length() - 7
    return 64 * shift + (us >> shift)


def _bucket_value(index: int) -> float:
    if index < 128:
        return float(index)
    shift = index // 64 - 1
    return ((index - 64 * shift) << shift) + (1 << shift) / 2


_HIST_MAX_US: Final = (1 << 34) - 1  # about 4.8 hours
_HIST_SIZE: Final = _bucket(_HIST_MAX_US) + 1


class LatencyHistogram:
    """Latencies in log-linear microsecond buckets: fixed size, mergeable across processes."""

    __slots__ = ("counts", "max_us", "total")

    def __init__(self) -> None:
        self.counts = [0] * _HIST_SIZE
        self.total = 0
        self.max_us = 0

    def record(self, seconds: float) -> None:
        us = min(max(int(seconds * 1_000_000), 0), _HIST_MAX_US)
        self.counts[_bucket(us)] += 1
        self.total += 1
        if us > self.max_us:
            self.max_us = us

    def copy(self) -> LatencyHistogram:
        other = LatencyHistogram()
        other.counts, other.total, other.max_us = list(self.counts), self.total, self.max_us
        return other

    def merge(self, other: LatencyHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.max_us = max(self.max_us, other.max_us)

    def since(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """What was recorded after `earlier` (a copy of this histogram taken before)."""
        window = LatencyHistogram()
        window.counts = [a - b for a, b in zip(self.counts, earlier.counts, strict=True)]
        window.total = self.total - earlier.total
        top = next((index for index in range(len(window.counts) - 1, -1, -1) if window.counts[index]), None)
        # The exact maximum of the window is not kept: its bucket's value, capped by the overall maximum.
        window.max_us = 0 if top is None else min(int(_bucket_value(top)), self.max_us)
        return window

    def percentile_ms(self, fraction: float) -> float | None:
        if self.total <= 0:
            return None
        rank = max(1, math.ceil(fraction * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(_bucket_value(index), float(self.max_us)) / 1000
        return self.max_us / 1000

    def summary_ms(self) -> dict[str, float | int | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "p50": rounded(self.percentile_ms(0.50)),
            "p90": rounded(self.percentile_ms(0.90)),
            "p99": rounded(self.percentile_ms(0.99)),
            "max": rounded(self.max_us / 1000) if self.total else None,
            "count": self.total,
        }
