"""The store's writes for the query socket: removals, re-insertions, groups, commit futures and jobs."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate
from agentpulse.status import ConnectionStatus, StatusCode, Trigger
from agentpulse.store.batch import GroupChange, GroupChangeKind, GroupMode, InsertedAgent
from agentpulse.store.facade import Store
from agentpulse.store.groups import group_hash
from agentpulse.store.sqlite import schema
from agentpulse.wire.keys import KeysFile
from tests.store.databases import Database, read
from tests.store.test_facade import Clock


@pytest.fixture
def store(tmp_path: Path, database: Database) -> Iterator[Store]:
    clock = Clock()
    keys = KeysFile.parse("".join(f"{n:03d} agent-{n:02d} any key{n}\n" for n in range(1, 6)))
    store = Store(
        tmp_path / "db",
        manager_host="mgr",
        node_name="node01",
        flush_interval=5,
        clock=clock.wall,
        backend=database.backend(tmp_path / "db"),
    )
    store.open(list(keys.active()))
    yield store
    store.close()


def keys(*numbers: int) -> list:  # type: ignore[type-arg]
    return list(KeysFile.parse("".join(f"{n:03d} agent-{n:02d} any key{n}\n" for n in numbers)).active())


def test_removal_is_a_last_transition_to_disconnected_and_the_row_goes(store: Store) -> None:
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
    (row,) = store.remove_agents([1], 2.0)
    assert (row.from_status, row.to_status, row.code) == (
        ConnectionStatus.PENDING,
        ConnectionStatus.DISCONNECTED,
        StatusCode.NONE,
    )
    assert store.flush_wait()
    assert read(store, "SELECT COUNT(*) FROM agent WHERE id = 1")[0][0] == 0
    assert read(store, "SELECT COUNT(*) FROM belongs WHERE id_agent = 1")[0][0] == 0
    assert read(store, "SELECT COUNT(*) FROM agent_runtime WHERE agent_id = 1")[0][0] == 0
    rows = read(
        store, "SELECT from_status, to_status, status_code FROM agent_status_history WHERE agent_id = 1"
    )
    assert [tuple(r) for r in rows] == [("never_connected", "pending", 0), ("pending", "disconnected", 0)]


def test_removal_of_a_disconnected_agent_repeats_its_status_and_code(store: Store) -> None:
    store.submit(StatusUpdate(2, Trigger.STARTUP, 1.0))
    store.submit(StatusUpdate(2, Trigger.SHUTDOWN, 2.0))
    (row,) = store.remove_agents([2], 3.0)
    assert (row.from_status, row.to_status, row.code) == (
        ConnectionStatus.DISCONNECTED,
        ConnectionStatus.DISCONNECTED,
        StatusCode.SHUTDOWN_RECEIVED,
    )


def test_removal_purges_the_agent_database_files(store: Store, database: Database) -> None:
    store.submit(StatusUpdate(3, Trigger.STARTUP, 1.0))
    assert store.flush_wait()
    assert store.reader().has_agent_db(3)
    store.remove_agents([3], 2.0, purge_files=True)
    assert store.flush_wait()
    assert not store.reader().has_agent_db(3)
    if database.name == "sqlite":
        assert not Path(f"{store.db_dir / '003.db'}-wal").exists()


def test_agent_removed_then_added_again_in_one_batch_is_there_with_a_continued_sequence(store: Store) -> None:
    store.submit(StatusUpdate(4, Trigger.STARTUP, 1.0))
    assert store.flush_wait()
    store.remove_agents([4], 2.0)
    store.add_agents(keys(4))
    store.submit(StatusUpdate(4, Trigger.STARTUP, 3.0))
    assert store.flush_wait()
    assert read(store, "SELECT connection_status FROM agent WHERE id = 4")[0][0] == "pending"
    seqs = [r[0] for r in read(store, "SELECT seq FROM agent_status_history WHERE agent_id = 4 ORDER BY seq")]
    assert seqs == [1, 2, 3]


def test_agent_removed_in_a_previous_run_comes_back_without_a_sequence_clash(
    tmp_path: Path, database: Database
) -> None:
    first = Store(
        tmp_path / "db",
        manager_host="mgr",
        node_name="n",
        flush_interval=5,
        backend=database.backend(tmp_path),
    )
    first.open(keys(1, 2))
    first.submit(StatusUpdate(2, Trigger.STARTUP, 1.0))
    first.remove_agents([2], 2.0)
    first.close()
    second = Store(
        tmp_path / "db",
        manager_host="mgr",
        node_name="n",
        flush_interval=5,
        backend=database.backend(tmp_path),
    )
    second.open(keys(1))
    try:
        second.add_agents(keys(2))
        second.submit(StatusUpdate(2, Trigger.STARTUP, 3.0))
        assert second.flush_wait()
        assert second.write_errors == 0
        assert read(second, "SELECT MAX(seq) FROM agent_status_history WHERE agent_id = 2")[0][0] == 3
    finally:
        second.close()


def test_inserted_agent_then_removed_in_one_batch_is_not_written(store: Store) -> None:
    assert store.insert_agent(InsertedAgent(50, "x", None, None, None, ("web",), 1))
    assert not store.insert_agent(InsertedAgent(50, "x", None, None, None, (), 1))
    store.remove_agents([50], 1.0)
    assert store.flush_wait()
    assert read(store, "SELECT COUNT(*) FROM agent WHERE id = 50")[0][0] == 0


def test_group_changes_apply_in_order_with_dense_priorities(store: Store) -> None:
    store.change_groups(
        [
            GroupChange(GroupChangeKind.CREATE, ("web",)),
            GroupChange(GroupChangeKind.SET, ("web", "db"), 1, GroupMode.APPEND),
            GroupChange(GroupChangeKind.SET, ("default",), 1, GroupMode.REMOVE),
            GroupChange(GroupChangeKind.DELETE, ("web",)),
        ]
    )
    assert store.flush_wait()
    rows = read(
        store,
        "SELECT g.name, b.priority FROM belongs b JOIN `group` g ON g.id = b.id_group WHERE id_agent = 1",
    )
    assert [tuple(r) for r in rows] == [("db", 0)]
    assert tuple(read(store, "SELECT `group`, group_hash FROM agent WHERE id = 1")[0]) == (
        "db",
        group_hash(["db"]),
    )


def test_new_agents_start_in_default_with_its_hash(store: Store) -> None:
    assert tuple(read(store, "SELECT `group`, group_hash FROM agent WHERE id = 5")[0]) == (
        "default",
        "37a8eec1",  # sha256("default")[:8], as wazuh-db computes it (OS_SHA256_String_sized)
    )


def test_committed_future_waits_for_the_commit(store: Store) -> None:
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
    future = store.committed()
    future.result(10)
    assert read(store, "SELECT connection_status FROM agent WHERE id = 1")[0][0] == "pending"


def test_a_vacuum_runs_on_the_writer_thread_after_the_pending_batch(store: Store) -> None:
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
    seen: list[tuple[str, str]] = []
    vacuum = store.backend.vacuum

    def watched(now: float) -> int:
        seen.append(
            (
                read(store, "SELECT connection_status FROM agent WHERE id = 1")[0][0],
                threading.current_thread().name,
            )
        )
        return vacuum(now)

    store.backend.vacuum = watched  # type: ignore[method-assign]
    assert store.vacuum().result(10) >= 0
    assert seen == [("pending", "store-writer")]


def test_a_failing_job_fails_alone(store: Store, database: Database) -> None:
    if database.name != "sqlite":
        pytest.skip("the failing job is SQLite's: a vacuum of an empty per-agent file")
    with pytest.raises(sqlite3.OperationalError):
        store.vacuum(3).result(10)  # agent 3 never started: an empty file, no metadata table to record in
    store.submit(StatusUpdate(2, Trigger.STARTUP, 1.0))
    assert store.flush_wait()
    assert read(store, "SELECT connection_status FROM agent WHERE id = 2")[0][0] == "pending"


def test_jobs_and_commit_futures_fail_once_the_store_is_closed(tmp_path: Path, database: Database) -> None:
    store = Store(
        tmp_path / "db",
        manager_host="mgr",
        node_name="n",
        flush_interval=5,
        backend=database.backend(tmp_path),
    )
    store.open(keys(1))
    store.close()
    with pytest.raises(RuntimeError):
        store.vacuum().result(1)
    with pytest.raises(RuntimeError):
        store.committed().result(1)


def test_sync_status_is_never_downgraded(store: Store) -> None:
    store.set_sync_status(1, "syncreq")
    assert store.flush_wait()
    store.set_sync_status(1, "syncreq_keepalive")
    assert store.flush_wait()
    assert read(store, "SELECT sync_status FROM agent WHERE id = 1")[0][0] == "syncreq"
    store.set_sync_status(1, "synced")
    assert store.flush_wait()
    assert read(store, "SELECT sync_status FROM agent WHERE id = 1")[0][0] == "synced"


def test_manager_row_cannot_be_inserted_over(store: Store) -> None:
    assert not store.insert_agent(InsertedAgent(schema.MANAGER_ID, "x", None, None, None, (), 1))


def test_a_reset_of_many_agents_and_single_changes_in_one_batch_are_all_written(
    tmp_path: Path, database: Database
) -> None:
    """Agents sharing a change's values (a start's code-5 reset) are written together (SQLite: one
    statement per group); the changes around them, one agent's second change of the batch included, too."""
    clock = Clock()
    store = Store(
        tmp_path / "db",
        manager_host="mgr",
        node_name="node01",
        flush_interval=5,
        clock=clock.wall,
        backend=database.backend(tmp_path / "db"),
    )
    store.open(keys(*range(1, 41)))
    try:
        for agent_id in range(1, 41):
            store.submit(StatusUpdate(agent_id, Trigger.STARTUP, 1.0))
        assert store.flush_wait()
        assert store.reset_connections() == 40  # all at clock.now: one group
        store.submit(StatusUpdate(2, Trigger.STARTUP, clock.now + 1))  # and agent 2 is back
        assert store.flush_wait()
        statuses = read(
            store, "SELECT id, connection_status, status_code, disconnection_time FROM agent WHERE id != 0"
        )
        expected = {n: ("disconnected", 5, int(clock.now)) for n in range(1, 41)}
        expected[2] = ("pending", 0, 0)
        assert {row[0]: tuple(row[1:]) for row in statuses} == expected
        history = read(
            store,
            "SELECT agent_id, seq, from_status, to_status, status_code, at FROM agent_status_history "
            "WHERE agent_id IN (1, 2) ORDER BY agent_id, seq",
        )
        assert [tuple(row) for row in history] == [
            (1, 1, "never_connected", "pending", 0, 1.0),
            (1, 2, "pending", "disconnected", 5, clock.now),
            (2, 1, "never_connected", "pending", 0, 1.0),
            (2, 2, "pending", "disconnected", 5, clock.now),
            (2, 3, "disconnected", "pending", 0, clock.now + 1),
        ]
        assert read(store, "SELECT COUNT(*) FROM agent_status_history WHERE status_code = 5")[0][0] == 40
    finally:
        store.close()
    again = Store(
        tmp_path / "db", manager_host="mgr", node_name="node01", backend=database.backend(tmp_path / "db")
    )
    again.open(keys(*range(1, 41)))
    try:  # each agent's sequence goes on from the last row written
        assert again.agents[2].seq == 3 and again.agents[40].seq == 2
    finally:
        again.close()
