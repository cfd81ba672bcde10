"""`global sql`: refused unless allowed, read-only, bounded in time and size."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentpulse.store.sqlite.reads import SqliteReader
from agentpulse.wdb.commands.sql import run_read_only_sql
from tests.wdb.served import Served


def test_sql_is_refused_unless_allowed(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", allow_sql="no")
    try:
        assert served.query("global sql SELECT 1").startswith("err SQL queries are disabled")
    finally:
        served.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM agent",
        "UPDATE agent SET name = 'x'",
        "DROP TABLE agent",
        "PRAGMA journal_mode=DELETE",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "BEGIN",
        "SELECT 1; DELETE FROM agent",
        "CREATE TEMP TABLE t(x)",
    ],
)
def test_sql_allows_no_write(served: Served, statement: str) -> None:
    answer = served.query(f"global sql {statement}")
    assert answer.startswith("err Cannot execute Global database query;")
    assert served.rows("SELECT COUNT(*) FROM agent")[0][0] == 6


def test_sql_read_only_select(served: Served) -> None:
    assert served.query("global sql SELECT id, name, ip FROM agent WHERE id < 2 ORDER BY id") == (
        'ok [{"id":0,"name":"mgr","ip":"127.0.0.1"},{"id":1,"name":"agent-00001"}]'
    )


def test_sql_answer_over_the_frame_is_an_error(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", agents=3000)
    try:
        assert "passes 65536 bytes" in served.query("global sql SELECT * FROM agent")
    finally:
        served.close()


def test_run_read_only_sql_time_limit(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite3.connect(db).close()
    answer = run_read_only_sql(
        SqliteReader(db),
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
        0.2,
    )
    assert answer == "err Cannot execute Global database query; interrupted after 0.2 s"
