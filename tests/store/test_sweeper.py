"""The sweeper on an injected monotonic clock: silent agents go at T, never before, whatever the wall clock does."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate
from agentpulse.status import Trigger
from agentpulse.store.facade import Store
from agentpulse.store.sweeper import Sweeper
from agentpulse.wire.keys import KeysFile
from tests.store.databases import Database, read
from tests.store.test_facade import KEEPALIVE, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock, database: Database) -> Iterator[Store]:
    keys = KeysFile.parse("001 web-01 any k1\n002 web-02 10.0.0.2 k2\n003 web-03 any k3\n004 web-04 any k4\n")
    store = Store(
        tmp_path / "db",
        manager_host="m",
        node_name="n",
        clock=clock.wall,
        monotonic=clock.monotonic,
        backend=database.backend(tmp_path / "db"),
    )
    store.open(list(keys.active()))
    yield store
    store.close()


def _alive(store: Store, clock: Clock, agent_id: int) -> None:
    store.submit(StatusUpdate(agent_id, Trigger.ALIVE, clock.now, keepalive=KEEPALIVE))


def test_silent_agent_is_disconnected_with_code_4_at_the_timeout_and_not_before(
    store: Store, clock: Clock
) -> None:
    sweeper = Sweeper(store, timeout=10)
    _alive(store, clock, 1)
    clock.mono += 9.9
    assert sweeper.sweep() == []
    clock.mono += 0.2
    assert sweeper.sweep() == [1]
    assert store.flush_wait()
    assert tuple(read(store, "SELECT connection_status, status_code FROM agent WHERE id = 1")[0]) == (
        "disconnected",
        4,
    )


def test_agent_that_keeps_talking_is_never_swept(store: Store, clock: Clock) -> None:
    sweeper = Sweeper(store, timeout=10)
    for _ in range(100):
        _alive(store, clock, 1)
        clock.mono += 5
        assert sweeper.sweep() == []


def test_only_the_silent_go_whatever_order_the_agents_last_spoke_in(store: Store, clock: Clock) -> None:
    sweeper = Sweeper(store, timeout=10)
    for agent_id in (1, 2, 3, 4):
        _alive(store, clock, agent_id)
        clock.mono += 1
    _alive(store, clock, 1)  # first to start, last heard: now the most recent
    store.submit(StatusUpdate(3, Trigger.SHUTDOWN, clock.now))  # silent but already disconnected
    clock.mono += 8.5  # at 12.5: 2 (heard at 1) silent for 11.5 s, 4 (at 3) 9.5 s, 1 (at 4) 8.5 s
    assert sweeper.sweep() == [2]
    clock.mono += 1
    assert sweeper.sweep() == [4]
    clock.mono += 1
    assert sweeper.sweep() == [1]
    assert sweeper.sweep() == []
    _alive(store, clock, 2)  # back: swept again only after a new silence
    clock.mono += 10.5
    assert sweeper.sweep() == [2]


def test_a_wall_clock_jump_disconnects_nobody(store: Store, clock: Clock) -> None:
    sweeper = Sweeper(store, timeout=10)
    _alive(store, clock, 1)
    clock.now += 86_400 * 365  # the machine's clock jumps a year ahead
    clock.mono += 1
    assert sweeper.sweep() == []
    clock.now -= 86_400 * 730  # and two years back
    assert sweeper.sweep() == []


def test_disconnection_alert_after_the_alert_time_marks_the_history_row(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    sweeper = Sweeper(store, timeout=10, alert_time=30)
    _alive(store, clock, 2)
    clock.mono += 11
    assert sweeper.sweep() == [2]
    clock.mono += 29
    with caplog.at_level(logging.WARNING):
        sweeper.sweep()
        assert "Agent disconnected" not in caplog.text
        clock.mono += 2
        sweeper.sweep()
    assert "Agent disconnected: 'web-02-10.0.0.2'." in caplog.text
    assert store.flush_wait()
    rows = read(store, "SELECT to_status, alerted FROM agent_status_history WHERE agent_id = 2 ORDER BY seq")
    assert [tuple(r) for r in rows] == [("active", 0), ("disconnected", 1)]


def test_no_alert_when_the_agent_came_back(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    sweeper = Sweeper(store, timeout=10, alert_time=5)
    _alive(store, clock, 1)
    clock.mono += 11
    sweeper.sweep()
    _alive(store, clock, 1)
    clock.mono += 6
    with caplog.at_level(logging.WARNING):
        sweeper.sweep()
    assert "Agent disconnected" not in caplog.text


def test_an_overloaded_manager_stretches_the_timeout_and_says_so_in_the_history_row(
    store: Store, clock: Clock
) -> None:
    behind = [3.0]
    sweeper = Sweeper(store, timeout=10, allowance=lambda: behind[0])
    _alive(store, clock, 1)
    clock.mono += 12.9  # silent for T + 2.9 s while the manager is 3 s behind: not the agent's fault
    assert sweeper.sweep() == []
    clock.mono += 0.2
    assert sweeper.sweep() == [1]
    assert store.flush_wait()
    rows = read(store, "SELECT status_code, reason FROM agent_status_history WHERE agent_id = 1 ORDER BY seq")
    code, reason = rows[-1]
    assert code == 4
    assert reason == "no keep-alive within the timeout (while the manager was overloaded: 3.0 s behind)"


def test_a_small_lag_stretches_but_is_not_called_overload(store: Store, clock: Clock) -> None:
    sweeper = Sweeper(store, timeout=10, allowance=lambda: 0.5)
    _alive(store, clock, 1)
    clock.mono += 10.6
    assert sweeper.sweep() == [1]
    assert store.flush_wait()
    assert (
        read(store, "SELECT reason FROM agent_status_history WHERE agent_id = 1 ORDER BY seq DESC")[0][0]
        is None
    )
