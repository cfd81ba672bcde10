"""global.db (Wazuh v7 + agentpulse tables) and the per-agent DB (v16), Wazuh's tables column for column."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from agentpulse.store.sqlite import schema

NOW = 1_700_000_000

# PRAGMA table_info: (name, type, notnull, dflt_value, pk)
AGENT_TABLE = [
    ("id", "INTEGER", 0, None, 1),
    ("name", "TEXT", 1, None, 0),
    ("ip", "TEXT", 0, None, 0),
    ("register_ip", "TEXT", 0, None, 0),
    ("internal_key", "TEXT", 0, None, 0),
    ("os_name", "TEXT", 0, None, 0),
    ("os_version", "TEXT", 0, None, 0),
    ("os_major", "TEXT", 0, None, 0),
    ("os_minor", "TEXT", 0, None, 0),
    ("os_codename", "TEXT", 0, None, 0),
    ("os_build", "TEXT", 0, None, 0),
    ("os_platform", "TEXT", 0, None, 0),
    ("os_uname", "TEXT", 0, None, 0),
    ("os_arch", "TEXT", 0, None, 0),
    ("version", "TEXT", 0, None, 0),
    ("config_sum", "TEXT", 0, None, 0),
    ("merged_sum", "TEXT", 0, None, 0),
    ("manager_host", "TEXT", 0, None, 0),
    ("node_name", "TEXT", 0, "'unknown'", 0),
    ("date_add", "INTEGER", 1, None, 0),
    ("last_keepalive", "INTEGER", 0, None, 0),
    ("group", "TEXT", 0, "'default'", 0),
    ("group_hash", "TEXT", 0, "NULL", 0),
    ("group_sync_status", "TEXT", 1, "'synced'", 0),
    ("sync_status", "TEXT", 1, "'synced'", 0),
    ("connection_status", "TEXT", 1, "'never_connected'", 0),
    ("disconnection_time", "INTEGER", 0, "0", 0),
    ("group_config_status", "TEXT", 1, "'not synced'", 0),
    ("status_code", "INTEGER", 0, "0", 0),
]

OTHER_TABLES = {
    "labels": [
        ("id", "INTEGER", 0, None, 1),
        ("key", "TEXT", 1, None, 2),
        ("value", "TEXT", 1, None, 0),
    ],
    "info": [("key", "TEXT", 0, None, 1), ("value", "TEXT", 0, None, 0)],
    "group": [("id", "INTEGER", 0, None, 1), ("name", "TEXT", 0, None, 0)],
    "belongs": [
        ("id_agent", "INTEGER", 0, None, 1),
        ("id_group", "INTEGER", 0, None, 2),
        ("priority", "INTEGER", 1, "0", 0),
    ],
    "metadata": [("key", "TEXT", 0, None, 1), ("value", "TEXT", 0, None, 0)],
    "agent_status_history": [
        ("agent_id", "INTEGER", 1, None, 1),
        ("seq", "INTEGER", 1, None, 2),
        ("from_status", "TEXT", 1, None, 0),
        ("to_status", "TEXT", 1, None, 0),
        ("status_code", "INTEGER", 1, None, 0),
        ("at", "REAL", 1, None, 0),
        ("alerted", "INTEGER", 1, "0", 0),
        ("reason", "TEXT", 0, None, 0),
    ],
    "event_outbox": [
        ("id", "INTEGER", 0, None, 1),
        ("subject", "TEXT", 1, None, 0),
        ("msg_id", "TEXT", 1, None, 0),
        ("payload", "BLOB", 1, None, 0),
        ("created", "REAL", 1, None, 0),
    ],
    "agent_runtime": [
        ("agent_id", "INTEGER", 0, None, 1),
        ("events_received", "INTEGER", 1, "0", 0),
        ("state_json", "TEXT", 0, None, 0),
        ("state_at", "REAL", 0, None, 0),
        ("status_seq", "INTEGER", 1, "0", 0),
    ],
}

GLOBAL_INDEXES = {
    "agent_name": ("agent", ["name"]),
    "agent_ip": ("agent", ["ip"]),
    "agent_group_hash": ("agent", ["group_hash"]),
    "group_name": ("group", ["name"]),
    "belongs_id_agent": ("belongs", ["id_agent"]),
    "belongs_id_group": ("belongs", ["id_group"]),
    "agent_status_history_at": ("agent_status_history", ["at"]),
}


def table_info(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    rows = conn.execute(f"PRAGMA table_info(`{table}`)").fetchall()
    return [(row["name"], row["type"], row["notnull"], row["dflt_value"], row["pk"]) for row in rows]


@pytest.fixture
def global_db(tmp_path: Path) -> Path:
    path = tmp_path / "queue" / "db" / "global.db"
    schema.create_global_db(path, "manager-host", NOW)
    return path


@pytest.fixture
def conn(global_db: Path) -> Iterator[sqlite3.Connection]:
    with closing(schema.connect(global_db)) as connection:
        yield connection


def test_agent_table_has_every_column_type_constraint_and_default(conn: sqlite3.Connection) -> None:
    assert table_info(conn, "agent") == AGENT_TABLE


def test_agent_columns_constant_follows_the_table(conn: sqlite3.Connection) -> None:
    live = tuple(row["name"] for row in conn.execute("PRAGMA table_info(agent)"))
    assert live == schema.AGENT_COLUMNS


@pytest.mark.parametrize("table", sorted(OTHER_TABLES))
def test_other_tables_have_the_listed_columns(conn: sqlite3.Connection, table: str) -> None:
    assert table_info(conn, table) == OTHER_TABLES[table]


def test_indexes_exist_on_the_listed_columns(conn: sqlite3.Connection) -> None:
    for index, (table, columns) in GLOBAL_INDEXES.items():
        row = conn.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = ?", (index,))
        assert row.fetchone()[0] == table, index
        assert [r["name"] for r in conn.execute(f"PRAGMA index_info({index})")] == columns


def test_belongs_allows_one_group_per_priority(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO agent (id, name, date_add) VALUES (1, 'a1', 1)")
    conn.execute("INSERT INTO `group` (name) VALUES ('g1'), ('g2')")
    conn.execute("INSERT INTO belongs (id_agent, id_group, priority) VALUES (1, 1, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO belongs (id_agent, id_group, priority) VALUES (1, 2, 0)")


def test_group_names_are_unique(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO `group` (name) VALUES ('default')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO `group` (name) VALUES ('default')")


def test_metadata_is_seeded_with_both_versions(conn: sqlite3.Connection) -> None:
    rows = dict(conn.execute("SELECT key, value FROM metadata").fetchall())
    assert rows == {"db_version": "7", "agentpulse_schema": "1"}


def test_manager_row_is_id_0_active_with_year_9999_keepalive(conn: sqlite3.Connection) -> None:
    row = conn.execute("SELECT * FROM agent WHERE id = 0").fetchone()
    assert row["name"] == "manager-host"
    assert (row["ip"], row["register_ip"]) == ("127.0.0.1", "127.0.0.1")
    assert row["last_keepalive"] == 253402300799
    assert row["group"] is None
    assert row["connection_status"] == "active"
    assert row["date_add"] == NOW
    assert (row["sync_status"], row["status_code"], row["node_name"]) == ("synced", 0, "unknown")


def test_new_agent_gets_wazuh_defaults(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO agent (id, name, date_add) VALUES (1, 'agent-01', 5)")
    row = conn.execute("SELECT * FROM agent WHERE id = 1").fetchone()
    assert row["connection_status"] == "never_connected"
    assert row["group"] == "default"
    assert row["group_hash"] is None
    assert (row["sync_status"], row["group_sync_status"]) == ("synced", "synced")
    assert row["group_config_status"] == "not synced"
    assert (row["disconnection_time"], row["status_code"]) == (0, 0)


@pytest.mark.parametrize(
    ("column", "good", "bad"),
    [
        ("connection_status", "pending", "online"),
        ("sync_status", "syncreq_keepalive", "dirty"),
        ("group_sync_status", "syncreq", "syncreq_status"),
        ("group_config_status", "synced", "unsynced"),
    ],
)
def test_check_constraints_reject_values_outside_the_list(
    conn: sqlite3.Connection, column: str, good: str, bad: str
) -> None:
    conn.execute(f"INSERT INTO agent (id, name, date_add, {column}) VALUES (1, 'a1', 1, ?)", (good,))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(f"INSERT INTO agent (id, name, date_add, {column}) VALUES (2, 'a2', 1, ?)", (bad,))


def test_deleting_an_agent_cascades_to_labels_and_belongs_but_not_history(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO agent (id, name, date_add) VALUES (1, 'a1', 1)")
    conn.execute("INSERT INTO labels (id, key, value) VALUES (1, 'env', 'prod')")
    conn.execute("INSERT INTO `group` (name) VALUES ('default')")
    conn.execute("INSERT INTO belongs (id_agent, id_group) VALUES (1, 1)")
    conn.execute(
        "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at)"
        " VALUES (1, 1, 'pending', 'active', 0, 1.5)"
    )
    conn.execute("DELETE FROM agent WHERE id = 1")
    counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("labels", "belongs")]
    assert counts == [0, 0]
    assert conn.execute("SELECT count(*) FROM agent_status_history").fetchone()[0] == 1


def test_create_global_db_is_idempotent_and_keeps_the_first_manager_row(global_db: Path) -> None:
    with closing(schema.connect(global_db)) as conn, conn:
        conn.execute("INSERT INTO agent (id, name, date_add) VALUES (1, 'agent-01', 5)")
    schema.create_global_db(global_db, "renamed", NOW + 100)
    with closing(schema.connect(global_db)) as conn:
        rows = conn.execute("SELECT id, name, date_add FROM agent ORDER BY id").fetchall()
        assert [tuple(row) for row in rows] == [(0, "manager-host", NOW), (1, "agent-01", 5)]
        assert conn.execute("SELECT count(*) FROM metadata").fetchone()[0] == 2


def test_global_db_uses_wal(conn: sqlite3.Connection) -> None:
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_writer_connection_pragmas(conn: sqlite3.Connection) -> None:
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.row_factory is sqlite3.Row


def test_readonly_connection_cannot_write(global_db: Path) -> None:
    with closing(schema.connect(global_db, readonly=True)) as conn:
        assert conn.execute("SELECT name FROM agent WHERE id = 0").fetchone()["name"] == "manager-host"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO agent (id, name, date_add) VALUES (9, 'x', 1)")


def test_readonly_connection_sees_commits_of_a_running_writer(global_db: Path) -> None:
    with (
        closing(schema.connect(global_db)) as writer,
        closing(schema.connect(global_db, readonly=True)) as reader,
    ):
        with writer:
            writer.execute("INSERT INTO agent (id, name, date_add) VALUES (1, 'agent-01', 5)")
        assert reader.execute("SELECT name FROM agent WHERE id = 1").fetchone()["name"] == "agent-01"


def test_readonly_connection_to_an_idle_database_leaves_no_side_files(global_db: Path) -> None:
    with closing(schema.connect(global_db, readonly=True)) as conn:
        conn.execute("SELECT count(*) FROM agent").fetchone()
    assert sorted(p.name for p in global_db.parent.iterdir()) == ["global.db"]


def test_agent_db_is_seeded(tmp_path: Path) -> None:
    path = tmp_path / "queue" / "db" / "001.db"
    assert schema.create_agent_db(path) is True
    with closing(schema.connect(path)) as conn:
        assert dict(conn.execute("SELECT key, value FROM metadata").fetchall()) == {"db_version": "16"}
        scans = conn.execute("SELECT * FROM scan_info ORDER BY module").fetchall()
        assert [row["module"] for row in scans] == ["fim", "syscollector"]
        assert all(value == 0 for row in scans for value in tuple(row)[1:])
        components = [row["component"] for row in conn.execute("SELECT component FROM sync_info")]
        assert len(components) == 18
        assert set(components) == set(schema.SYNC_COMPONENTS)
        assert "syscollector-browser-extensions" in components
        row = conn.execute("SELECT * FROM sync_info WHERE component = 'fim'").fetchone()
        assert tuple(row)[1:] == (0, 0, 0, 0, "", "")


def test_agent_db_scan_info_columns(tmp_path: Path) -> None:
    path = tmp_path / "002.db"
    schema.create_agent_db(path)
    with closing(schema.connect(path)) as conn:
        names = [row[0] for row in table_info(conn, "scan_info")]
        assert names == [
            "module",
            "first_start",
            "first_end",
            "start_scan",
            "end_scan",
            "fim_first_check",
            "fim_second_check",
            "fim_third_check",
        ]


def test_create_agent_db_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "003.db"
    assert schema.create_agent_db(path) is True
    with closing(schema.connect(path)) as conn, conn:
        conn.execute("UPDATE scan_info SET start_scan = 42 WHERE module = 'fim'")
    assert schema.create_agent_db(path) is False
    with closing(schema.connect(path)) as conn:
        assert conn.execute("SELECT start_scan FROM scan_info WHERE module = 'fim'").fetchone()[0] == 42
        assert conn.execute("SELECT count(*) FROM sync_info").fetchone()[0] == 18


def test_agent_db_from_template_bytes(tmp_path: Path) -> None:
    template_path = tmp_path / ".agent-template.db"
    schema.create_agent_db(template_path)
    template = template_path.read_bytes()
    path = tmp_path / "004.db"
    assert schema.create_agent_db(path, template) is True
    with closing(schema.connect(path)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM sync_info").fetchone()[0] == 18
        conn.execute("UPDATE scan_info SET start_scan = 7 WHERE module = 'fim'")
    # An existing database is never replaced by the template, and no temporary file is left behind.
    assert schema.create_agent_db(path, template) is False
    with closing(schema.connect(path)) as conn:
        assert conn.execute("SELECT start_scan FROM scan_info WHERE module = 'fim'").fetchone()[0] == 7
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_a_global_db_from_before_the_reason_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "global.db"
    schema.create_global_db(path, "manager", 1)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE agent_status_history DROP COLUMN reason")
    schema.create_global_db(path, "manager", 1)
    with closing(sqlite3.connect(path)) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(agent_status_history)")]
    assert columns[-1] == "reason"
