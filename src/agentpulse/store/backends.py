"""Which database `<database>` names: the backend the manager's store writes through, and the `Reader` the
CLIs open. The one place that knows both backends exist; everything else sees `Backend` and `Reader`.

PostgreSQL is imported only when configured, so an SQLite manager or CLI never loads psycopg.
"""

from __future__ import annotations

from pathlib import Path

from agentpulse.config.manager import DatabaseConfig
from agentpulse.store.backend import Backend
from agentpulse.store.reader import Reader
from agentpulse.store.sqlite.backend import SqliteBackend
from agentpulse.store.sqlite.reads import SqliteReader

POSTGRESQL = "postgresql"


def db_dir_of(config: DatabaseConfig, default: Path) -> Path:
    return Path(config.path) if config.path else default


def backend_for(config: DatabaseConfig, db_dir: Path, *, manager_host: str, node_name: str) -> Backend:
    if config.backend == POSTGRESQL:
        from agentpulse.store.postgresql.backend import PostgresBackend
        from agentpulse.store.postgresql.connect import conninfo

        return PostgresBackend(conninfo(config), manager_host=manager_host, node_name=node_name)
    return SqliteBackend(db_dir, manager_host=manager_host, node_name=node_name)


def reader_for(config: DatabaseConfig, db_dir: Path) -> Reader:
    """A reader for tools run beside a manager (agent_control, agentpulse status)."""
    if config.backend == POSTGRESQL:
        from agentpulse.store.postgresql.connect import conninfo
        from agentpulse.store.postgresql.reads import PostgresReader

        return PostgresReader(conninfo(config))
    return SqliteReader(db_dir / "global.db")


def describe(config: DatabaseConfig, db_dir: Path) -> str:
    """Where the data is, for messages (never the password)."""
    if config.backend == POSTGRESQL:
        from agentpulse.store.postgresql.connect import conninfo, redacted

        return f"PostgreSQL {redacted(conninfo(config))}"
    return str(db_dir / "global.db")
