"""The connection grace tracker on an injected clock and loop: code 6 only when no holder binds the agent
again within the grace, counted per holder (remoted process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from agentpulse.records import StatusUpdate
from agentpulse.remoted.grace import GraceTracker
from agentpulse.status import Trigger

GRACE = 10.0
MAX_STRETCH = 60.0  # the tracker's bound in these tests (the manager gives agents_disconnection_time)
NOW = 1_700_000_000.0


class Timer:
    def __init__(
        self, loop: FakeLoop, at: float, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        self.loop, self.at, self.callback, self.args = loop, at, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """call_later only; `advance()` runs the timers that are due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(self, self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted((t for t in self.timers if t.at <= self.now and not t.cancelled), key=lambda t: t.at)
        for timer in due:
            self.timers.remove(timer)
            timer.callback(*timer.args)

    @property
    def pending(self) -> list[Timer]:
        return [timer for timer in self.timers if not timer.cancelled]


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


@pytest.fixture
def submitted() -> list[StatusUpdate]:
    return []


@pytest.fixture
def tracker(loop: FakeLoop, submitted: list[StatusUpdate]) -> GraceTracker:
    return GraceTracker(submitted.append, GRACE, lambda: NOW, cast(asyncio.AbstractEventLoop, loop))


def test_a_lost_connection_not_bound_again_is_code_6_after_the_grace(
    tracker: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate]
) -> None:
    tracker.bound(1)
    tracker.closed(1)
    loop.advance(GRACE - 0.1)
    assert submitted == []
    loop.advance(0.1)
    assert submitted == [StatusUpdate(1, Trigger.CONNECTION_LOST, NOW)]


def test_binding_again_within_the_grace_cancels_it(
    tracker: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate]
) -> None:
    tracker.bound(1)
    tracker.closed(1)
    loop.advance(GRACE / 2)
    tracker.bound(1)
    loop.advance(GRACE)
    assert submitted == [] and loop.pending == []


def test_a_release_starts_no_grace(
    tracker: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate]
) -> None:
    tracker.bound(1)
    tracker.released(1)
    assert loop.pending == []
    tracker.closed(1)  # a late report of the same connection: it is not held any more
    loop.advance(GRACE * 2)
    assert submitted == []


def test_a_close_of_an_agent_never_bound_is_ignored(tracker: GraceTracker, loop: FakeLoop) -> None:
    tracker.closed(9)
    tracker.released(9)
    assert loop.pending == []


def test_another_holder_keeps_the_agent_connected(
    tracker: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate]
) -> None:
    tracker.bound(1, holder=1)
    tracker.bound(1, holder=2)  # reconnected to another worker
    tracker.closed(1, holder=1)  # the old connection finally closes
    assert loop.pending == []
    tracker.closed(1, holder=2)
    loop.advance(GRACE)
    assert submitted == [StatusUpdate(1, Trigger.CONNECTION_LOST, NOW)]


def test_one_timer_per_agent_however_many_closes(tracker: GraceTracker, loop: FakeLoop) -> None:
    tracker.bound(1, holder=1)
    tracker.closed(1, holder=1)
    tracker.bound(1, holder=2)  # cancels
    tracker.closed(1, holder=2)
    tracker.closed(1, holder=2)
    assert len(loop.pending) == 1


def test_a_dead_holder_loses_every_agent_it_held(
    tracker: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate]
) -> None:
    tracker.bound(1, holder=1)
    tracker.bound(2, holder=1)
    tracker.bound(2, holder=2)
    tracker.bound(3, holder=2)
    assert sorted(tracker.holder_lost(1)) == [1, 2]
    loop.advance(GRACE)
    assert submitted == [StatusUpdate(1, Trigger.CONNECTION_LOST, NOW)]  # 2 is still held by worker 2


def test_cancel_all_stops_every_grace(
    tracker: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate]
) -> None:
    for agent_id in (1, 2):
        tracker.bound(agent_id)
        tracker.closed(agent_id)
    tracker.cancel_all()
    loop.advance(GRACE)
    assert submitted == [] and loop.pending == []


class Behind:
    """The manager's lag as the tracker reads it (`allowance`), set by the test."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def behind() -> Behind:
    return Behind()


@pytest.fixture
def stretching(loop: FakeLoop, submitted: list[StatusUpdate], behind: Behind) -> GraceTracker:
    return GraceTracker(
        submitted.append,
        GRACE,
        lambda: NOW,
        cast(asyncio.AbstractEventLoop, loop),
        allowance=behind,
        max_stretch=MAX_STRETCH,
    )


def test_an_overloaded_manager_stretches_the_grace_by_its_lag_and_binding_then_keeps_the_agent(
    stretching: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate], behind: Behind
) -> None:
    stretching.bound(1)
    stretching.closed(1)
    behind.seconds = 5.0  # the agent may be waiting in our accept queue to come back
    loop.advance(GRACE)
    assert submitted == [] and stretching.stretches == 1
    loop.advance(4.9)
    stretching.bound(1)  # it got in
    loop.advance(60.0)
    assert submitted == [] and loop.pending == []


def test_a_lag_under_the_overload_mark_does_not_stretch(
    stretching: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate], behind: Behind
) -> None:
    behind.seconds = 0.5  # OVERLOADED is 1 s: an ordinary busy loop
    stretching.bound(1)
    stretching.closed(1)
    loop.advance(GRACE)
    assert submitted == [StatusUpdate(1, Trigger.CONNECTION_LOST, NOW)] and stretching.stretches == 0


def test_a_lasting_overload_stretches_at_most_max_stretch_in_all(
    stretching: GraceTracker, loop: FakeLoop, submitted: list[StatusUpdate], behind: Behind
) -> None:
    behind.seconds = 25.0
    stretching.bound(1)
    stretching.closed(1)
    loop.advance(GRACE)
    for _ in range(2):  # 25 + 25 s
        loop.advance(25.0)
        assert submitted == []
    loop.advance(MAX_STRETCH - 50.0 - 0.1)  # the last stretch is only what is left of MAX_STRETCH
    assert submitted == []
    loop.advance(0.1)
    assert submitted == [StatusUpdate(1, Trigger.CONNECTION_LOST, NOW)]
    assert stretching.stretches == 3
    # A later loss of the same agent starts from a whole grace and a whole MAX_STRETCH again.
    stretching.bound(1)
    stretching.closed(1)
    loop.advance(GRACE + MAX_STRETCH - 0.1)
    assert len(submitted) == 1
