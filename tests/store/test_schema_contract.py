"""The two backends write Wazuh's global tables (v7) apart, each in its own dialect (SQLite's schema and
PostgreSQL's migration 1 cannot share text: a migration that ran must stay as it ran). What keeps them the
same tables: this test, which compares the columns both create, in order, with their NOT NULL."""

from __future__ import annotations

from pathlib import Path

import psycopg

from agentpulse.store.postgresql import schema as pg_schema
from agentpulse.store.sqlite import schema
from tests.pgserver import PostgresServer
from tests.store.databases import PostgresDatabase

# Wazuh's global.db tables, and agentpulse's that both backends hold alike
TABLES = ("agent", "labels", "info", "group", "belongs", "metadata", "agent_status_history", "event_outbox")


def _sqlite_columns(path: Path) -> dict[str, list[tuple[str, bool]]]:
    db = schema.connect(path, readonly=True)
    try:
        return {
            table: [
                (row["name"], bool(row["notnull"] or row["pk"]))
                for row in db.execute(f"PRAGMA table_info(`{table}`)")
            ]
            for table in TABLES
        }
    finally:
        db.close()


def _postgres_columns(dsn: str) -> dict[str, list[tuple[str, bool]]]:
    with psycopg.connect(dsn) as db:
        return {
            table: [
                (str(name), nullable == "NO")
                for name, nullable in db.execute(
                    "SELECT column_name, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                ).fetchall()
            ]
            for table in TABLES
        }


def test_both_backends_create_the_same_global_tables(postgres: PostgresServer, tmp_path: Path) -> None:
    schema.create_global_db(tmp_path / "global.db", "manager", 1)
    dsn = PostgresDatabase(postgres).dsn
    with psycopg.connect(dsn) as db:
        pg_schema.migrate(db, "manager", 1)
    on_sqlite, on_postgres = _sqlite_columns(tmp_path / "global.db"), _postgres_columns(dsn)
    assert [name for name, _ in on_sqlite["agent"]] == list(schema.AGENT_COLUMNS)
    for table in TABLES:
        assert on_sqlite[table], table
        assert on_postgres[table] == on_sqlite[table], table
