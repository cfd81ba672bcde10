"""The two databases the store's contract suite runs against, behind one test-side face: make a backend,
read rows back with plain SQL (written once in SQLite's spelling, translated for PostgreSQL), and make the
database refuse writes for a while. Tests take the `database` fixture (tests/store/conftest.py).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentpulse.store.backend import Backend
from agentpulse.store.reader import Reader
from agentpulse.store.sqlite import schema
from agentpulse.store.sqlite.backend import SqliteBackend
from tests.pgserver import PostgresServer

_names = itertools.count(1)


class Row(tuple[Any, ...]):
    """A row readable by position and by column name, as sqlite3.Row is."""

    names: tuple[str, ...]

    def __new__(cls, values: tuple[Any, ...], names: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row.names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)


class Database:
    name = ""

    def backend(self, db_dir: Path) -> Backend:
        raise NotImplementedError

    def read(self, sql: str, *params: object) -> list[Row]:
        raise NotImplementedError

    def refusing_writes(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError


class SqliteDatabase(Database):
    name = "sqlite"

    def __init__(self, db_dir: Path) -> None:
        self.db_dir = db_dir

    def backend(self, db_dir: Path | None = None) -> Backend:
        return SqliteBackend(self.db_dir, manager_host="mgr", node_name="node01")

    def read(self, sql: str, *params: object) -> list[Row]:
        db = schema.connect(self.db_dir / "global.db", readonly=True)
        try:
            cursor = db.execute(sql, params)
            names = tuple(d[0] for d in cursor.description)
            return [Row(tuple(r), names) for r in cursor]
        finally:
            db.close()

    @contextlib.contextmanager
    def refusing_writes(self) -> Iterator[None]:
        blocker = sqlite3.connect(self.db_dir / "global.db", timeout=0)
        blocker.execute("PRAGMA busy_timeout = 0")
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            blocker.rollback()
            blocker.close()


def postgres_sql(sql: str) -> str:
    """SQLite's spelling of a test query in PostgreSQL's: `group` quoted, ? placeholders."""
    return re.sub(r"`(\w+)`", r'"\1"', sql).replace("?", "%s")


class PostgresDatabase(Database):
    name = "postgresql"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.dsn = server.create_database(f"contract_{next(_names)}")

    def backend(self, db_dir: Path | None = None) -> Backend:
        from agentpulse.store.postgresql.backend import PostgresBackend

        return PostgresBackend(self.dsn, manager_host="mgr", node_name="node01")

    def reader(self) -> Reader:
        from agentpulse.store.postgresql.reads import PostgresReader

        return PostgresReader(self.dsn)

    def read(self, sql: str, *params: object) -> list[Row]:
        import psycopg

        with psycopg.connect(self.dsn) as db:
            cursor = db.execute(postgres_sql(sql), params)  # type: ignore[arg-type]
            names = tuple(d.name for d in cursor.description or ())
            return [Row(tuple(r), names) for r in cursor.fetchall()]

    @contextlib.contextmanager
    def refusing_writes(self) -> Iterator[None]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as db:
            db.execute(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; "
                "END $$ LANGUAGE plpgsql"
            )
            db.execute(
                "CREATE TRIGGER refuse BEFORE UPDATE ON agent FOR EACH STATEMENT EXECUTE FUNCTION refuse()"
            )
            try:
                yield
            finally:
                db.execute("DROP TRIGGER refuse ON agent")
                db.execute("DROP FUNCTION refuse()")


def read(store: Any, sql: str, *params: object) -> list[Row]:
    """Rows of `sql` from whichever database `store` (a Store) writes."""
    from agentpulse.store.postgresql.backend import PostgresBackend

    backend = store.backend
    if isinstance(backend, PostgresBackend):
        import psycopg

        with psycopg.connect(backend.conninfo) as db:
            cursor = db.execute(postgres_sql(sql), params)  # type: ignore[arg-type]
            names = tuple(d.name for d in cursor.description or ())
            return [Row(tuple(r), names) for r in cursor.fetchall()]
    return SqliteDatabase(backend.db_dir).read(sql, *params)
