"""The store: status rules applied in memory, written in batches to a real database (SQLite and PostgreSQL:
the `database` fixture runs each test on both)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate
from agentpulse.status import ConnectionStatus, StatusCode, Trigger
from agentpulse.store.facade import Store
from agentpulse.store.subscriber import Subscriber
from agentpulse.store.view import Adopted
from agentpulse.wire import control
from agentpulse.wire.keys import KeysFile
from tests.store.databases import Database, read

KEEPALIVE = control.parse_keepalive(
    b'Linux |h |6.1 |#1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7\n"env":prod\nx merged.mg\n'
    b'#"_agent_ip":10.0.0.9\n'
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.mono = 100.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock, database: Database) -> Iterator[Store]:
    keys = KeysFile.parse("".join(f"{n:03d} agent-{n:02d} any key{n}\n" for n in range(1, 6)))
    store = Store(
        tmp_path / "db",
        backend=database.backend(tmp_path / "db"),
        manager_host="mgr",
        node_name="node01",
        flush_interval=0.05,
        clock=clock.wall,
        monotonic=clock.monotonic,
    )
    store.open(list(keys.active()))
    yield store
    store.close()


def test_agents_of_client_keys_start_never_connected_in_the_default_group(store: Store) -> None:
    rows = read(
        store, "SELECT id, name, register_ip, internal_key, connection_status FROM agent WHERE id > 0"
    )
    assert tuple(rows[0]) == (1, "agent-01", "any", "key1", "never_connected")
    assert len(rows) == 5
    groups = read(
        store, "SELECT COUNT(*) FROM belongs JOIN `group` g ON g.id = id_group WHERE g.name='default'"
    )
    assert groups[0][0] == 5


def test_startup_then_keepalive_writes_pending_then_active_with_the_keepalive_columns(store: Store) -> None:
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1_700_000_001))
    store.submit(StatusUpdate(1, Trigger.ALIVE, 1_700_000_002, keepalive=KEEPALIVE))
    assert store.flush_wait()
    row = read(store, "SELECT * FROM agent WHERE id = 1")[0]
    assert (row["connection_status"], row["status_code"], row["last_keepalive"]) == (
        "active",
        0,
        1_700_000_002,
    )
    assert (row["os_name"], row["os_codename"], row["ip"], row["node_name"]) == (
        "Debian GNU/Linux",
        "bookworm",
        "10.0.0.9",
        "node01",
    )
    history = read(store, "SELECT seq, from_status, to_status, status_code FROM agent_status_history")
    assert [tuple(r) for r in history] == [(1, "never_connected", "pending", 0), (2, "pending", "active", 0)]
    labels = dict(tuple(r) for r in read(store, "SELECT key, value FROM labels WHERE id = 1"))
    assert labels == {
        '"env"': "prod",
        '#"_agent_ip"': "10.0.0.9",
        '#"_manager_hostname"': "mgr",
        '#"_node_name"': "node01",
        '#"_wazuh_version"': "Wazuh v4.14.7",
    }
    # The per-agent database is created off the writer thread, shortly after the commit.
    deadline = time.monotonic() + 5
    while not store.reader().has_agent_db(1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.reader().has_agent_db(1)


def test_repeated_keepalives_are_one_write_and_no_transition(store: Store) -> None:
    store.submit(StatusUpdate(2, Trigger.STARTUP, 1))
    for second in range(2, 200):
        store.submit(StatusUpdate(2, Trigger.ALIVE, second, keepalive=KEEPALIVE))
    assert store.flush_wait()
    assert read(store, "SELECT last_keepalive FROM agent WHERE id = 2")[0][0] == 199
    assert read(store, "SELECT COUNT(*) FROM agent_status_history WHERE agent_id = 2")[0][0] == 2


def test_repeated_keepalives_of_many_agents_touch_each_its_own_second(store: Store) -> None:
    for agent_id in (1, 2, 3):
        store.submit(StatusUpdate(agent_id, Trigger.STARTUP, 10))
        store.submit(StatusUpdate(agent_id, Trigger.ALIVE, 11, keepalive=KEEPALIVE))
    assert store.flush_wait()
    # Same keep-alive text again: only last_keepalive moves, grouped by second in one statement each.
    store.submit(StatusUpdate(1, Trigger.ALIVE, 40.2, keepalive=KEEPALIVE))
    store.submit(StatusUpdate(2, Trigger.ALIVE, 41.9, keepalive=KEEPALIVE))
    store.submit(StatusUpdate(3, Trigger.ALIVE, 40.7, keepalive=KEEPALIVE))
    assert store.flush_wait()
    rows = read(store, "SELECT id, last_keepalive FROM agent WHERE id IN (1, 2, 3) ORDER BY id")
    assert [tuple(row) for row in rows] == [(1, 40), (2, 41), (3, 40)]


def test_repeats_apply_like_submit_in_order_with_transitions_where_due(store: Store) -> None:
    heard: list[tuple[int, float]] = []
    store.subscribe(Subscriber(on_keepalive=lambda agent_id, at, keepalive: heard.append((agent_id, at))))
    for agent_id in (1, 2):
        store.submit(StatusUpdate(agent_id, Trigger.STARTUP, 10))
    store.submit(StatusUpdate(1, Trigger.ALIVE, 11, keepalive=KEEPALIVE))  # 1 active, 2 still pending
    assert store.flush_wait()
    # 3 never sent a keep-alive body: nothing to repeat, so it is skipped.
    store.submit_repeats([1, 2, 3, 1], [20.0, 21.0, 22.0, 23.0], {1: KEEPALIVE, 2: KEEPALIVE})
    assert heard == [(1, 11), (1, 20.0), (2, 21.0), (1, 23.0)]
    assert store.flush_wait()
    rows = read(
        store, "SELECT id, connection_status, last_keepalive FROM agent WHERE id IN (1, 2, 3) ORDER BY id"
    )
    assert [tuple(row) for row in rows] == [
        (1, "active", 23),
        (2, "active", 21),
        (3, "never_connected", None),
    ]
    history = read(store, "SELECT to_status FROM agent_status_history WHERE agent_id = 2 ORDER BY seq")
    assert [row[0] for row in history] == ["pending", "active"]
    assert list(store.view.heard) == [2, 1]  # the longest silent first: 2 (at 21), then 1 (at 23)


def test_shutdown_sets_code_3_and_the_disconnection_time(store: Store) -> None:
    store.submit(StatusUpdate(3, Trigger.STARTUP, 10))
    store.submit(StatusUpdate(3, Trigger.SHUTDOWN, 20))
    assert store.flush_wait()
    row = read(store, "SELECT connection_status, status_code, disconnection_time FROM agent WHERE id = 3")[0]
    assert tuple(row) == ("disconnected", 3, 20)


def test_manager_reset_disconnects_only_live_agents_with_code_5(store: Store) -> None:
    store.submit(StatusUpdate(1, Trigger.STARTUP, 10))
    store.submit(StatusUpdate(2, Trigger.STARTUP, 10))
    store.submit(StatusUpdate(2, Trigger.ALIVE, 11, keepalive=KEEPALIVE))
    store.submit(StatusUpdate(3, Trigger.STARTUP, 10))
    store.submit(StatusUpdate(3, Trigger.SHUTDOWN, 12))
    assert store.reset_connections() == 2
    assert store.flush_wait()
    statuses = {
        r[0]: (r[1], r[2]) for r in read(store, "SELECT id, connection_status, status_code FROM agent")
    }
    assert statuses[1] == statuses[2] == ("disconnected", 5)
    assert statuses[3] == ("disconnected", 3)
    assert statuses[4] == ("never_connected", 0)


def test_a_connection_lost_for_an_agent_another_node_holds_is_not_this_node_s(store: Store) -> None:
    """Several nodes: the view has agent 2 as another node's (adopted from the database); a key removal
    here submits a loss for it before its removal: it has no connection here, so nothing changes, and
    the removal row goes from the status the view had (not a code-6 row the writer would drop)."""
    store.adopt([Adopted(2, "node-b", ConnectionStatus.ACTIVE, StatusCode.NONE, 2)])
    assert store.submit(StatusUpdate(2, Trigger.CONNECTION_LOST, 20)) is None
    assert store.status_of(2) is ConnectionStatus.ACTIVE
    [row] = store.remove_agents([2], 21)
    assert (row.from_status, row.to_status, row.code) == (
        ConnectionStatus.ACTIVE,
        ConnectionStatus.DISCONNECTED,
        StatusCode.NONE,
    )


def test_version_refusal_keeps_the_status_and_sets_the_code(store: Store) -> None:
    store.submit(
        StatusUpdate(4, Trigger.VERSION_REFUSED, 5, code=StatusCode.INVALID_VERSION, version="Wazuh v9.9.9")
    )
    assert store.flush_wait()
    row = read(store, "SELECT connection_status, status_code, version FROM agent WHERE id = 4")[0]
    assert tuple(row) == ("never_connected", 1, "Wazuh v9.9.9")


def test_history_sequence_continues_after_a_reopen(tmp_path: Path, clock: Clock, database: Database) -> None:
    keys = list(KeysFile.parse("001 a1 any k\n").active())
    for _ in range(2):
        store = Store(
            tmp_path / "db",
            manager_host="m",
            node_name="n",
            clock=clock.wall,
            monotonic=clock.monotonic,
            backend=database.backend(tmp_path / "db"),
        )
        store.open(keys)
        store.submit(StatusUpdate(1, Trigger.STARTUP, 1))
        store.submit(StatusUpdate(1, Trigger.SHUTDOWN, 2))
        store.close()
    assert [r[0] for r in read(store, "SELECT seq FROM agent_status_history ORDER BY seq")] == [1, 2, 3, 4]


def test_close_commits_what_was_submitted_even_with_a_long_flush_interval(
    tmp_path: Path, clock: Clock, database: Database
) -> None:
    store = Store(
        tmp_path / "db",
        manager_host="m",
        node_name="n",
        flush_interval=60,
        clock=clock.wall,
        backend=database.backend(tmp_path / "db"),
    )
    store.open(list(KeysFile.parse("001 a1 any k\n").active()))
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1))
    store.close()
    assert read(store, "SELECT connection_status FROM agent WHERE id = 1")[0][0] == "pending"


def test_a_failed_write_is_retried_without_losing_the_batch(store: Store, database: Database) -> None:
    with database.refusing_writes():
        store.submit(StatusUpdate(5, Trigger.STARTUP, 1))
        store.flush_soon()
        deadline = time.monotonic() + 15
        while store.write_errors == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.write_errors >= 1
    store.submit(StatusUpdate(5, Trigger.ALIVE, 2, keepalive=KEEPALIVE))
    assert store.flush_wait()
    assert read(store, "SELECT connection_status FROM agent WHERE id = 5")[0][0] == "active"
    history = read(store, "SELECT to_status FROM agent_status_history WHERE agent_id = 5 ORDER BY seq")
    assert [r[0] for r in history] == ["pending", "active"]


def test_unknown_agents_are_ignored(store: Store) -> None:
    assert store.submit(StatusUpdate(99, Trigger.STARTUP, 1)) is None
    assert ConnectionStatus.PENDING not in {view.status for view in store.agents.values()}
