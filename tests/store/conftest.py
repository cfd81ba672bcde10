"""The store's contract suite runs against both backends: a test taking `database` runs once on SQLite (a
global.db in tmp_path) and once on PostgreSQL (a fresh database on the session's throwaway server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.databases import Database, PostgresDatabase, SqliteDatabase


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return SqliteDatabase(tmp_path / "db")
    return PostgresDatabase(request.getfixturevalue("postgres"))
