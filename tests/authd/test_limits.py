"""Who may open an enrolment connection: per source address, a rate and a number open; over all, a pool."""

from __future__ import annotations

from agentpulse.authd.limits import SourceLimits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_source_gets_rate_connections_at_once_then_one_per_interval() -> None:
    clock = Clock()
    limits = SourceLimits(rate=3, total=100, monotonic=clock)
    assert [limits.admit("10.0.0.1") for _ in range(3)] == [None, None, None]
    for _ in range(3):
        limits.release("10.0.0.1")
    assert limits.admit("10.0.0.1") == "more than 3 connections per second from this address"
    clock.now += 0.34
    assert limits.admit("10.0.0.1") is None


def test_a_source_may_not_hold_more_than_rate_open() -> None:
    clock = Clock()
    limits = SourceLimits(rate=2, total=100, monotonic=clock)
    assert limits.admit("10.0.0.1") is None and limits.admit("10.0.0.1") is None
    clock.now += 10
    assert limits.admit("10.0.0.1") == "more than 2 connections open from this address"
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.1") is None


def test_other_sources_are_not_affected() -> None:
    limits = SourceLimits(rate=1, total=100, monotonic=Clock())
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is not None
    assert limits.admit("10.0.0.2") is None


def test_the_pool_is_shared_by_every_source() -> None:
    limits = SourceLimits(rate=0, total=2, monotonic=Clock())
    assert limits.admit("a") is None and limits.admit("b") is None
    assert limits.admit("c") == "Too many connections"
    limits.release("a")
    assert limits.admit("c") is None


def test_a_rate_of_zero_is_no_limit_per_source() -> None:
    limits = SourceLimits(rate=0, total=10_000, monotonic=Clock())
    assert all(limits.admit("10.0.0.1") is None for _ in range(5000))


def test_idle_sources_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    limits = SourceLimits(rate=5, total=10**6, monotonic=clock)
    for n in range(5000):
        assert limits.admit(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}") is None
        limits.release(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        clock.now += 0.001
    clock.now += 2
    limits.admit("192.168.0.1")
    assert len(limits._sources) < 5000
