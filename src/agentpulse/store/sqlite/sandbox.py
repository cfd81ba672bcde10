"""Ad-hoc read-only SQL on a store database (`global sql` with `<allow_sql>read-only`), SQLite dialect.

The danger: the statement is the client's. A fresh read-only, query_only connection, an authorizer that
allows reading only (no write, PRAGMA, ATTACH, transaction or extension loading), a progress handler that
stops it after `time_limit`, and a cap on the JSON size of the rows: no statement can change a database,
run for ever or fill the memory.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

from agentpulse.store.reader import AnswerTooLarge as AnswerTooLarge
from agentpulse.store.reader import Row
from agentpulse.store.reader import SqlRefused as SqlRefused
from agentpulse.store.sqlite import schema

PROGRESS_STEPS = 10_000  # SQLite virtual-machine steps between two looks at the clock

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


def row_object(row: sqlite3.Row) -> Row:
    """One row as wdb_exec_stmt() gives it: columns in SELECT order, NULL columns left out, blobs as text."""
    result: Row = {}
    for key, value in zip(row.keys(), tuple(row), strict=True):
        if value is None:
            continue
        result[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return result


def _authorize(
    action: int, arg1: str | None, arg2: str | None, database: str | None, source: str | None
) -> int:
    """Only reading: no writes, no PRAGMA, no ATTACH, no transactions, no extension loading."""
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and arg2 is not None and arg2.lower() == "load_extension":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _json_size(row: Row) -> int:
    return len(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode())


def read_only_query(path: Path, statement: str, *, time_limit: float, max_bytes: int) -> list[Row]:
    """The rows of one read-only statement. SqlRefused when SQLite refuses or stops it, AnswerTooLarge
    once the rows, as a compact JSON array with one more byte each, pass `max_bytes`."""
    try:
        with contextlib.closing(schema.connect(path, readonly=True)) as db:
            db.execute("PRAGMA query_only = 1")
            deadline = time.monotonic() + time_limit
            db.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, PROGRESS_STEPS)
            db.set_authorizer(_authorize)
            rows: list[Row] = []
            size = 2
            for row in db.execute(statement):
                item = row_object(row)
                size += _json_size(item) + 1
                if size > max_bytes:
                    raise AnswerTooLarge(max_bytes)
                rows.append(item)
            return rows
    except (sqlite3.Error, sqlite3.Warning) as error:
        message = str(error)
        if message == "interrupted":
            message = f"interrupted after {time_limit:g} s"
        raise SqlRefused(message) from None
