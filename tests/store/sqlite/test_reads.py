"""SqliteReader: each named read on a global.db written by hand, plain data out, nothing written."""

from __future__ import annotations

import threading
from contextlib import closing
from pathlib import Path

import pytest

from agentpulse.store.sqlite import schema
from agentpulse.store.sqlite.reads import HistoryEntry, OutboxRow, SqliteReader, UnsyncedAgent


@pytest.fixture
def global_db(tmp_path: Path) -> Path:
    path = tmp_path / "global.db"
    schema.create_global_db(path, "mgr", 1_700_000_000)
    with closing(schema.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO agent (id, name, register_ip, date_add, connection_status, node_name, sync_status,"
            " last_keepalive, `group`, group_hash) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            [
                (1, "web-01", "any", "active", "node01", "synced", 100, "default,web", "bb533513"),
                (2, "web-02", "10.0.0.0/24", "disconnected", "node01", "syncreq", 200, "web", None),
                (3, "db-01", "10.0.0.3", "pending", "node02", "syncreq_keepalive", 300, "default", None),
                (4, "db-02", "any", "active", "node02", "syncreq_status", None, None, None),
            ],
        )
        db.executemany(
            "INSERT INTO labels (id, key, value) VALUES (?, ?, ?)",
            [(2, "env", "prod"), (2, "app", "shop"), (3, "env", "lab")],
        )
        db.execute("INSERT INTO `group` (name) VALUES ('default'), ('web'), ('empty')")
        db.executemany(
            "INSERT INTO belongs (id_agent, id_group, priority) VALUES (?, ?, ?)",
            [(1, 1, 0), (1, 2, 1), (2, 2, 0), (3, 1, 0)],
        )
        db.executemany(
            "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (1, 1, "never_connected", "pending", 0, 10.0),
                (1, 2, "pending", "active", 0, 11.0),
                (9, 1, "active", "disconnected", 0, 12.0),  # an agent since removed
            ],
        )
        db.executemany(
            "INSERT INTO event_outbox (subject, msg_id, payload, created) VALUES (?, ?, ?, 0)",
            [("agent.status.001", "001:1", b"{}"), ("agent.status.001", "001:2", b'{"a":1}')],
        )
    return path


@pytest.fixture
def reader(global_db: Path) -> SqliteReader:
    return SqliteReader(global_db)


def test_agent_row_leaves_null_columns_out(reader: SqliteReader) -> None:
    row = reader.agent(4)
    assert row is not None
    assert row["id"] == 4 and row["name"] == "db-02" and row["connection_status"] == "active"
    assert "last_keepalive" not in row and "ip" not in row and "group" not in row
    assert list(row)[:2] == ["id", "name"]  # table order, as SELECT * gives it
    assert reader.agent(404) is None


def test_labels_of_one_agent(reader: SqliteReader) -> None:
    assert reader.labels(2) == [
        {"id": 2, "key": "app", "value": "shop"},
        {"id": 2, "key": "env", "value": "prod"},
    ]
    assert reader.labels(1) == []


def test_agent_ids_after_an_id_by_status_node_and_limit(reader: SqliteReader) -> None:
    assert reader.agent_ids(-1) == [0, 1, 2, 3, 4]
    assert reader.agent_ids(2) == [3, 4]
    assert reader.agent_ids(0, 2) == [1, 2]
    assert reader.agent_ids(0, status="active") == [1, 4]
    assert reader.agent_ids(0, status="active", node="node02") == [4]
    assert reader.agent_ids(0, 1, status="pending", node="node02") == [3]


def test_find_agent_by_name_and_registered_address(reader: SqliteReader) -> None:
    assert reader.find_agent("web-01", "any") == [1]
    assert reader.find_agent("web-02", "10.0.0.0") == [2]  # registered as the network 10.0.0.0/24
    assert reader.find_agent("web-02", "10.0.0.1") == []


def test_statuses_include_the_manager_and_names_leave_it_out(reader: SqliteReader) -> None:
    assert reader.statuses() == {0: "active", 1: "active", 2: "disconnected", 3: "pending", 4: "active"}
    assert reader.names() == {1: "web-01", 2: "web-02", 3: "db-01", 4: "db-02"}


def test_unsynced_agents_read_labels_only_for_a_full_sync(reader: SqliteReader) -> None:
    agents = reader.unsynced_agents(0)
    assert [agent.row["id"] for agent in agents] == [2, 3, 4]
    assert all(isinstance(agent, UnsyncedAgent) for agent in agents)
    assert agents[0].labels == reader.labels(2)
    assert agents[1].labels is None and agents[2].labels is None  # keep-alive only, status only
    assert [agent.row["id"] for agent in reader.unsynced_agents(2, 1)] == [3]


def test_groups_their_ids_and_members(reader: SqliteReader) -> None:
    assert reader.group_names() == ["default", "web", "empty"]
    assert reader.group_id("web") == 2
    assert reader.group_id("web ") is None
    assert reader.group_members("default") == [1, 3]
    assert reader.group_members("web", after_id=1) == [2]
    assert reader.group_members("default", after_id=0, limit=1) == [1]
    assert reader.group_members("empty") == []
    assert reader.group_members("ghost") is None
    assert reader.agent_groups(1) == ["default", "web"]
    assert reader.agent_groups(404) == []


def test_group_sets_and_status_counts_per_group(reader: SqliteReader) -> None:
    assert sorted(reader.group_sets()) == [("default", None), ("default,web", "bb533513"), ("web", None)]
    assert reader.group_status_counts() == {
        "default": {"active": 1, "pending": 1},
        "web": {"active": 1, "disconnected": 1},
    }


def test_status_counts_and_recent_changes(reader: SqliteReader) -> None:
    assert reader.status_counts() == {"active": 2, "disconnected": 1, "pending": 1}
    assert reader.recent_changes(2) == [
        HistoryEntry(9, None, "active", "disconnected", 0, 12.0),
        HistoryEntry(1, "web-01", "pending", "active", 0, 11.0),
    ]


def test_outbox_rows_and_count(reader: SqliteReader) -> None:
    rows = reader.outbox_after(0, 10)
    assert rows == [
        OutboxRow(rows[0].row_id, "agent.status.001", "001:1", b"{}"),
        OutboxRow(rows[0].row_id + 1, "agent.status.001", "001:2", b'{"a":1}'),
    ]
    assert reader.outbox_after(rows[0].row_id, 10) == rows[1:]
    assert reader.outbox_after(0, 1) == rows[:1]
    assert reader.outbox_count(0) == 2
    assert reader.outbox_count(rows[1].row_id) == 0


def test_fim_scan_and_fragmentation_of_a_per_agent_database(reader: SqliteReader, tmp_path: Path) -> None:
    agent_db = tmp_path / "001.db"
    schema.create_agent_db(agent_db)
    assert reader.fim_scan(1) == (0, 0)
    with closing(schema.connect(agent_db)) as db, db:
        db.execute("UPDATE scan_info SET start_scan = 5, end_scan = 9 WHERE module = 'fim'")
    assert reader.fim_scan(1) == (5, 9)
    with closing(schema.connect(agent_db)) as db, db:
        db.execute("DELETE FROM scan_info WHERE module = 'fim'")
    assert reader.fim_scan(1) == (None, None)
    assert reader.fragmentation(1).free_pages_percentage == 0
    assert set(reader.fragmentation().as_json()) == {"fragmentation", "free_pages_percentage"}


def test_sql_runs_through_the_sandbox(reader: SqliteReader) -> None:
    assert reader.sql("SELECT id, ip FROM agent WHERE id < 2", time_limit=1, max_bytes=1000) == [
        {"id": 0, "ip": "127.0.0.1"},
        {"id": 1},
    ]


def test_reads_never_create_side_files_on_an_idle_database(reader: SqliteReader, global_db: Path) -> None:
    assert not Path(f"{global_db}-wal").exists()
    reader.statuses()
    reader.group_members("web")
    assert not Path(f"{global_db}-wal").exists() and not Path(f"{global_db}-shm").exists()


def test_a_reader_that_keeps_open_keeps_one_connection_per_thread(global_db: Path) -> None:
    with closing(schema.connect(global_db)) as writer:  # the store's writer: global.db is not idle
        reader = SqliteReader(global_db, keep_open=True)
        assert reader.outbox_count(0) == 2
        kept = reader._kept.db
        with writer:
            writer.execute(
                "INSERT INTO event_outbox (subject, msg_id, payload, created) VALUES ('s', '001:3', x'', 0)"
            )
        assert reader.outbox_count(0) == 3  # the kept connection sees later commits
        assert reader._kept.db is kept
        other: list[object] = []
        thread = threading.Thread(
            target=lambda: (reader.outbox_count(0), other.append(reader._kept.db), reader.close())
        )
        thread.start()
        thread.join(10)
        assert other and other[0] is not kept
        reader.close()
        assert reader._kept.db is None
