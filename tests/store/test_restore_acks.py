"""Store.restore_acks: acknowledgements the last run journaled, applied at start only where the database
does not already show them (a real global.db, closed and reopened as a restart does)."""

from __future__ import annotations

from pathlib import Path

from agentpulse.records import StatusUpdate
from agentpulse.status import StatusCode, Trigger
from agentpulse.store.facade import Store
from agentpulse.wire.keys import KeysFile
from tests.store.databases import Database, read
from tests.store.test_facade import KEEPALIVE

KEYS = KeysFile.parse("".join(f"{n:03d} agent-{n:02d} any key{n}\n" for n in range(1, 6)))
T0 = 1_700_000_000.0


def _store(db_dir: Path, database: Database) -> Store:
    store = Store(
        db_dir, manager_host="mgr", node_name="node01", flush_interval=0.05, backend=database.backend(db_dir)
    )
    store.open(list(KEYS.active()))
    return store


def _history(store: Store, agent_id: int) -> list[tuple[str, str, int]]:
    rows = read(
        store,
        "SELECT from_status, to_status, status_code FROM agent_status_history WHERE agent_id = ? ORDER BY seq",
        agent_id,
    )
    return [(row[0], row[1], row[2]) for row in rows]


def test_a_startup_the_database_lacks_is_restored_then_reset(tmp_path: Path, database: Database) -> None:
    store = _store(tmp_path, database)
    try:
        restored = store.restore_acks([StatusUpdate(1, Trigger.STARTUP, T0 + 0.5)])
        reset = store.reset_connections()
        assert store.flush_wait()
        assert (restored, reset) == (1, 1)
        assert (store.agents[1].status.value, store.agents[1].code) == (
            "disconnected",
            StatusCode.RESET_BY_MANAGER,
        )
        assert _history(store, 1) == [("never_connected", "pending", 0), ("pending", "disconnected", 5)]
    finally:
        store.close()


def test_an_ack_the_database_already_shows_is_not_replayed(tmp_path: Path, database: Database) -> None:
    first = _store(tmp_path, database)
    first.submit(StatusUpdate(2, Trigger.STARTUP, T0 + 0.7))  # committed: last_keepalive = T0
    first.submit(StatusUpdate(2, Trigger.SHUTDOWN, T0 + 0.8))
    first.submit(StatusUpdate(3, Trigger.STARTUP, T0 + 1))  # committed, still pending
    first.close()
    store = _store(tmp_path, database)
    try:
        restored = store.restore_acks(
            [StatusUpdate(2, Trigger.STARTUP, T0 + 0.7), StatusUpdate(3, Trigger.STARTUP, T0 + 1)]
        )
        assert restored == 0
        assert store.reset_connections() == 1  # agent 3, live in the database
        assert store.flush_wait()
        assert _history(store, 2) == [("never_connected", "pending", 0), ("pending", "disconnected", 3)]
    finally:
        store.close()


def test_a_later_ack_after_a_stored_disconnection_is_restored_once(
    tmp_path: Path, database: Database
) -> None:
    first = _store(tmp_path, database)
    first.submit(StatusUpdate(4, Trigger.STARTUP, T0))
    first.submit(StatusUpdate(4, Trigger.ALIVE, T0 + 1, keepalive=KEEPALIVE))
    first.submit(StatusUpdate(4, Trigger.SHUTDOWN, T0 + 2))
    first.close()
    store = _store(tmp_path, database)
    try:
        acks = [
            StatusUpdate(4, Trigger.STARTUP, T0 + 50),  # the agent came back; the kill beat the commit
            StatusUpdate(4, Trigger.STARTUP, T0),  # an older line, committed long ago
            StatusUpdate(4, Trigger.ALIVE, T0 + 51),
            StatusUpdate(99, Trigger.STARTUP, T0 + 50),  # not an agent of client.keys
        ]
        assert store.restore_acks(acks) == 1
        store.reset_connections()
        assert store.flush_wait()
        assert _history(store, 4)[3:] == [("disconnected", "pending", 0), ("pending", "disconnected", 5)]
    finally:
        store.close()
