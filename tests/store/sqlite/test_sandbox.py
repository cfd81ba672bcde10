"""The read-only SQL sandbox: reading is all a statement may do, within a time limit and a size cap."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from agentpulse.store.sqlite import schema
from agentpulse.store.sqlite.sandbox import AnswerTooLarge, SqlRefused, read_only_query, row_object

COUNT_FOR_EVER = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"


@pytest.fixture
def global_db(tmp_path: Path) -> Path:
    path = tmp_path / "global.db"
    schema.create_global_db(path, "mgr", 1)
    return path


def test_rows_leave_nulls_out_and_decode_blobs(global_db: Path) -> None:
    assert read_only_query(
        global_db, "SELECT id, name, os_name, x'6869' AS b FROM agent", time_limit=1, max_bytes=1000
    ) == [{"id": 0, "name": "mgr", "b": "hi"}]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM agent",
        "PRAGMA journal_mode=DELETE",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "BEGIN",
        "SELECT load_extension('x')",
    ],
)
def test_anything_but_reading_is_refused(global_db: Path, statement: str) -> None:
    with pytest.raises(SqlRefused):
        read_only_query(global_db, statement, time_limit=1, max_bytes=1000)
    with closing(schema.connect(global_db, readonly=True)) as db:
        assert db.execute("SELECT COUNT(*) FROM agent").fetchone()[0] == 1


def test_the_time_limit_interrupts(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    sqlite3.connect(path).close()
    with pytest.raises(SqlRefused, match=r"^interrupted after 0\.2 s$"):
        read_only_query(path, COUNT_FOR_EVER, time_limit=0.2, max_bytes=1000)


def test_the_size_cap_counts_the_json_array(global_db: Path) -> None:
    statement = "SELECT 1 AS a UNION ALL SELECT 2"  # {"a":1} is 7 bytes: counted 2 + (7 + 1) + (7 + 1)
    assert len(read_only_query(global_db, statement, time_limit=1, max_bytes=18)) == 2
    with pytest.raises(AnswerTooLarge):
        read_only_query(global_db, statement, time_limit=1, max_bytes=17)


def test_row_object_keeps_select_order() -> None:
    with closing(sqlite3.connect(":memory:")) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT 2 AS b, NULL AS n, 1 AS a").fetchone()
    assert list(row_object(row).items()) == [("b", 2), ("a", 1)]
