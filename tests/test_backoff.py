"""The one back-off formula: doubling from `base`, capped, jittered evenly; and each caller's numbers."""

from __future__ import annotations

import pytest

from agentpulse.backoff import MAX_DOUBLINGS, SATURATED, backoff_delay, jittered


def never() -> float:
    raise AssertionError("no jitter asked for: the random source must not be used")


def test_delays_double_from_base_up_to_the_cap() -> None:
    delays = [backoff_delay(attempt, base=0.5, cap=10.0, rand=never) for attempt in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_attempts_below_one_count_as_the_first() -> None:
    assert backoff_delay(0, base=1.0, cap=60.0) == backoff_delay(-3, base=1.0, cap=60.0) == 1.0


def test_doubling_stops_after_max_doublings_so_huge_attempts_stay_cheap() -> None:
    big = 1.0 * 2**MAX_DOUBLINGS
    assert backoff_delay(MAX_DOUBLINGS + 1, base=1.0, cap=1e9) == big
    assert backoff_delay(10**9, base=1.0, cap=1e9) == big
    assert backoff_delay(SATURATED, base=0.5, cap=10.0) == 10.0


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.8), (0.5, 1.0), (1.0, 1.2)])
def test_jitter_spreads_the_delay_evenly_around_it(draw: float, factor: float) -> None:
    assert jittered(8.0, 0.2, lambda: draw) == pytest.approx(8.0 * factor)
    assert backoff_delay(3, base=1.0, cap=60.0, jitter=0.2, rand=lambda: draw) == pytest.approx(4.0 * factor)


def test_without_jitter_the_random_source_is_not_called() -> None:
    assert jittered(2.5, 0.0, never) == 2.5


def test_each_caller_keeps_its_numbers() -> None:
    from agentpulse.agent import daemon
    from agentpulse.events import publisher
    from agentpulse.simulator import fleet

    assert (daemon.BACKOFF_START, daemon.BACKOFF_MAX, daemon.BACKOFF_JITTER) == (1.0, 60.0, 0.2)
    timing = fleet.AgentTiming()
    assert (timing.retry_interval, timing.max_retries, timing.retry_max, timing.jitter) == (
        10.0,
        5,
        60.0,
        0.2,
    )
    assert (publisher.BACKOFF_MIN, publisher.BACKOFF_MAX) == (0.5, 10.0)


def test_the_old_formulas_give_the_same_delays() -> None:
    """The three formulas the helper replaced, with the random draw pinned."""
    for draw in (0.0, 0.25, 0.5, 0.99):
        for attempt in range(1, 30):
            # agent/daemon.py: min(1 * 2**(n-1), 60) * (1 + uniform(-0.2, 0.2))
            daemon = min(1.0 * 2 ** (attempt - 1), 60.0) * (1 + (-0.2 + 0.4 * draw))
            assert backoff_delay(
                attempt, base=1.0, cap=60.0, jitter=0.2, rand=lambda d=draw: d
            ) == pytest.approx(daemon)
            # the simulator: min(8, 0.5 * 2**min(n-1, 16)) * uniform(0.8, 1.2)
            simulator = min(8.0, 0.5 * (1 << min(attempt - 1, 16))) * (0.8 + 0.4 * draw)
            assert backoff_delay(
                attempt, base=0.5, cap=8.0, jitter=0.2, rand=lambda d=draw: d
            ) == pytest.approx(simulator)
    # events/publisher.py: delay = min(max(delay * 2, 0.5), 10) after each failure, from 0
    delay = 0.0
    for attempt in range(1, 30):
        delay = min(max(delay * 2, 0.5), 10.0)
        assert backoff_delay(attempt, base=0.5, cap=10.0) == delay
