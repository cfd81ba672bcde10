"""`agentpulse db vacuum|check` on a home whose `<database>` is PostgreSQL.

`vacuum` asks the running manager (its query socket), else runs `VACUUM (ANALYZE)` itself: PostgreSQL lets
a vacuum run beside writers, so no home lock is needed. `check` connects, reads the schema version and
counts the rows of every table: PostgreSQL checksums its own pages, so a damaged table shows as an error.
"""

from __future__ import annotations

import json

from agentpulse.config.manager import DatabaseConfig
from agentpulse.paths import Home
from agentpulse.store.backend import StoreError

PROG = "agentpulse db"


def vacuum(home: Home, config: DatabaseConfig, agent: int | None) -> tuple[int, str]:
    from agentpulse.store.postgresql.backend import PostgresBackend
    from agentpulse.store.postgresql.connect import conninfo, redacted
    from agentpulse.wdb.client import WdbClient, WdbUnavailable

    info = conninfo(config)
    query = "global vacuum" if agent is None else f"agent {agent} vacuum"
    try:
        with WdbClient(home.wdb_socket, timeout=600) as client:
            status, _, payload = client.query(query).partition(" ")
        if status != "ok":
            return 1, f"{PROG}: {payload}\n"
        after, how = json.loads(payload).get("fragmentation_after_vacuum"), "by the manager"
    except WdbUnavailable:
        backend = PostgresBackend(info, manager_host="", node_name="")
        try:
            after = backend.vacuum_tables(agent)
        except StoreError as error:
            return 1, f"{PROG}: {error}\n"
        how = "no manager running here"
    return 0, f"PostgreSQL {redacted(info)}: vacuumed ({how}), dead tuples after vacuum {after}%\n"


def check(config: DatabaseConfig) -> tuple[int, str]:
    import psycopg

    from agentpulse.store.postgresql.connect import conninfo, redacted
    from agentpulse.store.postgresql.reads import AGENT_TABLES, GLOBAL_TABLES

    info = conninfo(config)
    where = f"PostgreSQL {redacted(info)}"
    try:
        with psycopg.connect(info) as db:
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            for table in (*GLOBAL_TABLES, *AGENT_TABLES):
                db.execute(psycopg.sql.SQL("SELECT COUNT(*) FROM {}").format(psycopg.sql.Identifier(table)))
    except psycopg.Error as error:
        return 1, f"{where}: cannot be checked: {str(error).strip()}\n"
    return 0, f"{where}: ok (schema version {row[0] if row else '?'})\n"
