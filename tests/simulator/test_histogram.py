"""The latency histogram alone: its percentiles are close enough, and processes' histograms add up."""

from __future__ import annotations

import pytest

from agentpulse.simulator.histogram import LatencyHistogram


def test_latency_histogram_percentiles_are_within_two_percent() -> None:
    histogram = LatencyHistogram()
    for n in range(1, 10_001):
        histogram.record(n / 1_000_000 * 37)  # 37 us .. 370 ms, uniform
    p50, p99 = histogram.percentile_ms(0.5), histogram.percentile_ms(0.99)
    assert p50 is not None and p99 is not None
    assert p50 == pytest.approx(185.0, rel=0.02)
    assert p99 == pytest.approx(366.3, rel=0.02)
    assert histogram.summary_ms()["max"] == 370.0


def test_latency_histograms_merge_across_processes() -> None:
    first, second = LatencyHistogram(), LatencyHistogram()
    for _ in range(99):
        first.record(0.001)
    second.record(0.5)
    first.merge(second)
    assert first.total == 100
    assert first.percentile_ms(0.99) == pytest.approx(1.0, rel=0.02)
    assert first.percentile_ms(1.0) == 500.0
