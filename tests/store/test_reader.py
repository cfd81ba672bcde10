"""The `Reader` contract, on both backends: the store writes a small fleet through its named operations, then
every named read answers the same plain data whichever database holds it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import Trigger
from agentpulse.store.batch import GroupChange, GroupChangeKind, GroupMode
from agentpulse.store.facade import Store
from agentpulse.store.groups import group_hash
from agentpulse.store.reader import HistoryEntry, Reader, SqlRefused
from agentpulse.store.subscriber import Subscriber
from agentpulse.wire.keys import KeysFile
from tests.store.databases import Database
from tests.store.test_facade import KEEPALIVE

KEYS = KeysFile.parse(
    "001 web-01 any k1\n002 web-02 10.0.0.0/24 k2\n003 db-01 10.0.0.3 k3\n004 db-02 any k4\n"
)


def outbox_row(row: TransitionRow) -> tuple[str, str, bytes]:
    return (
        f"agent.status.{row.agent_id:03d}",
        f"{row.agent_id:03d}:{row.seq}",
        b'{"to":"%s"}' % row.to_status.value.encode(),
    )


@pytest.fixture
def store(tmp_path: Path, database: Database) -> Iterator[Store]:
    store = Store(
        tmp_path / "db",
        manager_host="mgr",
        node_name="node01",
        flush_interval=0.05,
        backend=database.backend(tmp_path),
    )
    store.subscribe(Subscriber(outbox_encoder=outbox_row))
    store.open(list(KEYS.active()))
    store.submit(StatusUpdate(1, Trigger.STARTUP, 10.0))
    store.submit(StatusUpdate(1, Trigger.ALIVE, 11.0, keepalive=KEEPALIVE))
    store.submit(StatusUpdate(2, Trigger.STARTUP, 12.0))
    store.submit(StatusUpdate(2, Trigger.SHUTDOWN, 13.0))
    store.change_groups(
        [
            GroupChange(GroupChangeKind.CREATE, ("web",)),
            GroupChange(GroupChangeKind.CREATE, ("empty",)),
            GroupChange(GroupChangeKind.SET, ("web",), 1, GroupMode.APPEND),
            GroupChange(GroupChangeKind.SET, ("web",), 2, GroupMode.OVERRIDE),
        ]
    )
    store.set_sync_status(3, "syncreq")
    store.set_sync_status(4, "syncreq_status")
    store.set_config_statuses({2: "synced"}, 14.0)
    assert store.flush_wait()
    yield store
    store.close()


@pytest.fixture
def reader(store: Store) -> Iterator[Reader]:
    reader = store.reader()
    yield reader
    reader.close()


def test_agent_row_and_labels(reader: Reader) -> None:
    row = reader.agent(1)
    assert row is not None
    assert (row["id"], row["name"], row["connection_status"], row["last_keepalive"], row["os_codename"]) == (
        1,
        "web-01",
        "active",
        11,
        "bookworm",
    )
    assert list(row)[:3] == ["id", "name", "ip"]  # table order
    assert "os_build" not in row  # NULL columns are left out
    assert reader.agent(99) is None
    labels = {label["key"]: label["value"] for label in reader.labels(1)}
    assert labels['"env"'] == "prod" and labels['#"_node_name"'] == "node01"


def test_ids_statuses_and_names(reader: Reader) -> None:
    assert reader.agent_ids(0) == [1, 2, 3, 4]
    assert reader.agent_ids(1, 2) == [2, 3]
    assert reader.agent_ids(0, status="disconnected") == [2]
    assert reader.agent_ids(0, node="node01") == [1]  # node_name is written by a keep-alive
    assert reader.find_agent("web-02", "10.0.0.0") == [2]
    assert reader.find_agent("web-01", "any") == [1]
    assert reader.statuses() == {
        0: "active",
        1: "active",
        2: "disconnected",
        3: "never_connected",
        4: "never_connected",
    }
    assert reader.names() == {1: "web-01", 2: "web-02", 3: "db-01", 4: "db-02"}
    assert reader.status_counts() == {"active": 1, "disconnected": 1, "never_connected": 2}


def test_unsynced_agents_with_labels_unless_partial(reader: Reader) -> None:
    unsynced = reader.unsynced_agents(0)
    assert [(agent.row["id"], agent.labels) for agent in unsynced] == [(3, []), (4, None)]
    assert [agent.row["id"] for agent in reader.unsynced_agents(3)] == [4]


def test_groups(reader: Reader) -> None:
    assert reader.group_names() == ["default", "web", "empty"]
    assert reader.group_id("web") == 2 and reader.group_id("nope") is None
    assert reader.group_members("web") == [1, 2]
    assert reader.group_members("web", after_id=1) == [2]
    assert reader.group_members("empty") == []
    assert reader.group_members("nope") is None
    assert reader.agent_groups(1) == ["default", "web"]
    assert sorted(reader.group_sets()) == [
        ("default", group_hash(["default"])),
        ("default,web", group_hash(["default", "web"])),
        ("web", group_hash(["web"])),
    ]
    assert reader.group_status_counts() == {
        "default": {"active": 1, "never_connected": 2},
        "web": {"active": 1, "disconnected": 1},
    }
    assert reader.group_config_counts() == {
        "default": {"not synced": 3},
        "web": {"not synced": 1, "synced": 1},
    }


def test_recent_changes_newest_first_with_names(reader: Reader) -> None:
    assert reader.recent_changes(2) == [
        HistoryEntry(2, "web-02", "pending", "disconnected", 3, 13.0),
        HistoryEntry(2, "web-02", "never_connected", "pending", 0, 12.0),
    ]


def test_outbox_in_id_order_and_counted(reader: Reader) -> None:
    rows = reader.outbox_after(0, 10)
    assert [(row.msg_id, row.payload) for row in rows] == [
        ("001:1", b'{"to":"pending"}'),
        ("001:2", b'{"to":"active"}'),
        ("002:1", b'{"to":"pending"}'),
        ("002:2", b'{"to":"disconnected"}'),
    ]
    assert reader.outbox_after(rows[1].row_id, 1) == rows[2:3]
    assert reader.outbox_count(0) == 4 and reader.outbox_count(rows[3].row_id) == 0


def test_acked_outbox_rows_are_gone(store: Store, reader: Reader) -> None:
    rows = reader.outbox_after(0, 10)
    store.ack_outbox([rows[0].row_id, rows[1].row_id])
    assert store.flush_wait()
    assert [row.msg_id for row in reader.outbox_after(0, 10)] == ["002:1", "002:2"]


def test_per_agent_data_of_a_first_startup(reader: Reader) -> None:
    assert reader.has_agent_db(1) and not reader.has_agent_db(3)
    assert reader.fim_scan(1) == (0, 0)
    assert reader.fim_scan(3) == (None, None)
    assert set(reader.fragmentation().as_json()) == {"fragmentation", "free_pages_percentage"}
    assert 0 <= reader.fragmentation(1).fragmentation <= 100


def test_ad_hoc_sql_reads_and_refuses_writes(reader: Reader) -> None:
    rows = reader.sql("SELECT id, name FROM agent WHERE id = 1", time_limit=2, max_bytes=10_000)
    assert rows == [{"id": 1, "name": "web-01"}]
    like = reader.sql(
        "SELECT name FROM agent WHERE name LIKE 'web%' ORDER BY id", time_limit=2, max_bytes=10_000
    )
    assert like == [{"name": "web-01"}, {"name": "web-02"}]
    with pytest.raises(SqlRefused):
        reader.sql("DELETE FROM agent", time_limit=2, max_bytes=10_000)
    with pytest.raises(SqlRefused):
        reader.sql("SELECT 1; DELETE FROM agent", time_limit=2, max_bytes=10_000)
    with pytest.raises(SqlRefused):  # PostgreSQL: a second statement would run outside the READ ONLY one
        reader.sql(
            "COMMIT; SET default_transaction_read_only = off; DELETE FROM agent",
            time_limit=2,
            max_bytes=10_000,
        )
    assert reader.agent_ids(0) == [1, 2, 3, 4]


def test_ad_hoc_sql_is_stopped_at_its_time_limit(reader: Reader, database: Database) -> None:
    if database.name != "postgresql":
        pytest.skip("SQLite's progress-handler limit is tested in tests/store/sqlite/test_sandbox.py")
    with pytest.raises(SqlRefused, match=r"^interrupted after 0\.3 s$"):
        reader.sql("SELECT pg_sleep(5)", time_limit=0.3, max_bytes=10_000)
