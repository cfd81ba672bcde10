"""`PostgresReader`: the `Reader` (`store/reader.py`) of the PostgreSQL backend, and its read-only ad-hoc SQL.

Each thread keeps one autocommit connection (made on first use, dropped and made again after an error), so
the query socket's read pool costs one connection per thread and a read one round trip. The danger is the
client's own SQL in `sql()`: it runs alone (the extended protocol refuses a second statement) in a READ ONLY
transaction that is rolled back, under a statement_timeout, on a connection closed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from agentpulse.records import MANAGER_ID
from agentpulse.store.agentsql import AgentQueryReads, Run
from agentpulse.store.backend import Fragmentation
from agentpulse.store.postgresql import agentquery
from agentpulse.store.postgresql.connect import redacted
from agentpulse.store.postgresql.schema import MEMBERSHIP
from agentpulse.store.reader import (
    NO_LIMIT,
    PARTIAL_SYNCS,
    AnswerTooLarge,
    GroupCountColumn,
    HistoryEntry,
    OutboxRow,
    ReadFailed,
    Row,
    SqlRefused,
    UnsyncedAgent,
)

Conn = psycopg.Connection[dict[str, Any]]
GLOBAL_TABLES = (
    "agent",
    "labels",
    "belongs",
    "group",
    "agent_status_history",
    "event_outbox",
    "agent_runtime",
)
AGENT_TABLES = ("agent_scan_info", "agent_sync_info")


def row_object(row: dict[str, Any]) -> Row:
    """A row as wdb_exec_stmt() gives it: columns in order, NULL columns left out, binary as text."""
    result: Row = {}
    for key, value in row.items():
        if value is None:
            continue
        if isinstance(value, bytes | memoryview):
            value = bytes(value).decode("utf-8", "replace")
        result[key] = value
    return result


def _limit(limit: int) -> int | None:
    return None if limit == NO_LIMIT else limit  # LIMIT NULL is no limit


def dead_tuples(db: psycopg.Connection[Any], tables: tuple[str, ...]) -> Fragmentation:
    """PostgreSQL's measure of what a vacuum would reclaim: dead tuples as a share of all tuples."""
    with db.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT COALESCE(SUM(n_dead_tup), 0), COALESCE(SUM(n_live_tup + n_dead_tup), 0) "
            "FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (list(tables),),
        ).fetchone()
    dead, total = (int(row[0]), int(row[1])) if row else (0, 0)
    share = 0 if total == 0 else round(100 * dead / total)
    return Fragmentation(share, share)


class PostgresReader(AgentQueryReads):
    """`Reader` on PostgreSQL; the HTTP API's reads (`AgentQueryReads`) in PostgreSQL's dialect."""

    dialect = agentquery.POSTGRES

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._kept = threading.local()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Conn]:
        db: Conn | None = getattr(self._kept, "db", None)
        try:
            if db is None or db.closed:
                db = self._kept.db = psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)
            yield db
        except psycopg.Error as error:
            self.close()
            raise ReadFailed(f"PostgreSQL ({redacted(self.conninfo)}): {error}") from error

    @contextlib.contextmanager
    def _statements(self) -> Iterator[Run]:
        with self._connection() as db:
            yield agentquery.runner(db)

    def _rows(self, query: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        with self._connection() as db:
            return db.execute(query, params).fetchall()

    def _column(self, query: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        return [next(iter(row.values())) for row in self._rows(query, params)]

    def close(self) -> None:
        db = getattr(self._kept, "db", None)
        if db is not None:
            with contextlib.suppress(psycopg.Error):
                db.close()
            self._kept.db = None

    def exists(self) -> bool:
        rows = self._rows("SELECT to_regclass('agent') IS NOT NULL AS present")
        return bool(rows and rows[0]["present"])

    # -- agents ------------------------------------------------------------------------------------------

    def agent(self, agent_id: int) -> Row | None:
        rows = self._rows("SELECT * FROM agent WHERE id = %s", (agent_id,))
        return row_object(rows[0]) if rows else None

    def labels(self, agent_id: int) -> list[Row]:
        return [row_object(row) for row in self._rows("SELECT * FROM labels WHERE id = %s", (agent_id,))]

    def agent_ids(
        self, after_id: int, limit: int = NO_LIMIT, *, status: str | None = None, node: str | None = None
    ) -> list[int]:
        query = "SELECT id FROM agent WHERE id > %s"
        params: list[object] = [after_id]
        if status is not None:
            query += " AND connection_status = %s"
            params.append(status)
        if node is not None:
            query += " AND node_name = %s"
            params.append(node)
        return self._column(query + " ORDER BY id LIMIT %s", [*params, _limit(limit)])

    def find_agent(self, name: str, ip: str) -> list[int]:
        return self._column(
            "SELECT id FROM agent WHERE name = %s AND (register_ip = %s OR register_ip LIKE %s || '/_%%') "
            "ORDER BY id",
            (name, ip, ip),
        )

    def statuses(self) -> dict[int, str]:
        return {
            int(r["id"]): str(r["connection_status"])
            for r in self._rows("SELECT id, connection_status FROM agent")
        }

    def names(self) -> dict[int, str]:
        rows = self._rows("SELECT id, name FROM agent WHERE id != %s", (MANAGER_ID,))
        return {int(r["id"]): str(r["name"]) for r in rows}

    def unsynced_agents(self, after_id: int, limit: int = NO_LIMIT) -> list[UnsyncedAgent]:
        rows = self._rows(
            "SELECT * FROM agent WHERE id > %s AND sync_status != 'synced' ORDER BY id LIMIT %s",
            (after_id, _limit(limit)),
        )
        agents = []
        for row in rows:
            full = row_object(row)
            labels = None if full.get("sync_status") in PARTIAL_SYNCS else self.labels(full["id"])
            agents.append(UnsyncedAgent(full, labels))
        return agents

    # -- groups ------------------------------------------------------------------------------------------

    def group_names(self) -> list[str | None]:
        return self._column('SELECT name FROM "group" ORDER BY id')

    def group_id(self, name: str) -> int | None:
        ids = self._column('SELECT id FROM "group" WHERE name = %s', (name,))
        return int(ids[0]) if ids else None

    def group_members(
        self, name: str, after_id: int | None = None, limit: int = NO_LIMIT
    ) -> list[int] | None:
        if self.group_id(name) is None:
            return None
        query = f"SELECT b.id_agent FROM {MEMBERSHIP} WHERE g.name = %s"
        params: list[object] = [name]
        if after_id is not None:
            query += " AND b.id_agent > %s"
            params.append(after_id)
        return self._column(query + " ORDER BY b.id_agent LIMIT %s", [*params, _limit(limit)])

    def agent_groups(self, agent_id: int) -> list[str]:
        return self._column(
            f"SELECT g.name FROM {MEMBERSHIP} WHERE b.id_agent = %s ORDER BY b.priority", (agent_id,)
        )

    def group_sets(self) -> list[tuple[str, str | None]]:
        rows = self._rows(
            'SELECT DISTINCT "group", group_hash FROM agent WHERE id > %s AND "group" IS NOT NULL',
            (MANAGER_ID,),
        )
        return [(row["group"], row["group_hash"]) for row in rows]

    def agent_group_lists(self) -> list[tuple[int, str | None, str]]:
        rows = self._rows(
            'SELECT id, "group", group_config_status FROM agent WHERE id > %s ORDER BY id', (MANAGER_ID,)
        )
        return [(row["id"], row["group"], row["group_config_status"]) for row in rows]

    def group_config_counts(self) -> dict[str, dict[str, int]]:
        return self._counts_by_group("group_config_status")

    def group_status_counts(self) -> dict[str, dict[str, int]]:
        return self._counts_by_group("connection_status")

    def _counts_by_group(self, column: GroupCountColumn) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for row in self._rows(
            f"SELECT g.name, a.{column}, COUNT(*) AS n FROM {MEMBERSHIP} "
            f"JOIN agent AS a ON a.id = b.id_agent GROUP BY g.name, a.{column} ORDER BY g.name"
        ):
            counts.setdefault(row["name"], {})[row[column]] = int(row["n"])
        return counts

    # -- statuses ----------------------------------------------------------------------------------------

    def status_counts(self) -> dict[str, int]:
        rows = self._rows(
            "SELECT connection_status, COUNT(*) AS n FROM agent WHERE id != %s GROUP BY connection_status",
            (MANAGER_ID,),
        )
        return {row["connection_status"]: int(row["n"]) for row in rows}

    def recent_changes(self, limit: int) -> list[HistoryEntry]:
        rows = self._rows(
            "SELECT h.agent_id, a.name, h.from_status, h.to_status, h.status_code, h.at "
            "FROM agent_status_history h LEFT JOIN agent a ON a.id = h.agent_id "
            "ORDER BY h.at DESC, h.seq DESC LIMIT %s",
            (limit,),
        )
        return [HistoryEntry(*row.values()) for row in rows]

    # -- the events' outbox ------------------------------------------------------------------------------

    def outbox_after(self, after: int, limit: int) -> list[OutboxRow]:
        rows = self._rows(
            "SELECT id, subject, msg_id, payload FROM event_outbox WHERE id > %s ORDER BY id LIMIT %s",
            (after, limit),
        )
        return [OutboxRow(int(r["id"]), r["subject"], r["msg_id"], bytes(r["payload"])) for r in rows]

    def outbox_count(self, after: int) -> int:
        return int(self._column("SELECT COUNT(*) FROM event_outbox WHERE id > %s", (after,))[0])

    # -- per-agent data, upkeep and ad-hoc SQL ------------------------------------------------------------

    def has_agent_db(self, agent_id: int) -> bool:
        return bool(self._rows("SELECT 1 FROM agent_scan_info WHERE agent_id = %s LIMIT 1", (agent_id,)))

    def fim_scan(self, agent_id: int) -> tuple[int | None, int | None]:
        rows = self._rows(
            "SELECT start_scan, end_scan FROM agent_scan_info WHERE agent_id = %s AND module = 'fim'",
            (agent_id,),
        )
        return (rows[0]["start_scan"], rows[0]["end_scan"]) if rows else (None, None)

    def fragmentation(self, agent_id: int | None = None) -> Fragmentation:
        """Dead tuples of the global tables, or of the per-agent tables (every agent's: they are shared)."""
        with self._connection() as db:
            return dead_tuples(db, GLOBAL_TABLES if agent_id is None else AGENT_TABLES)

    def sql(self, statement: str, *, time_limit: float, max_bytes: int) -> list[Row]:
        """One client statement in PostgreSQL's dialect, read-only (see the module docstring)."""
        try:
            with psycopg.connect(self.conninfo, row_factory=dict_row) as db:
                db.execute("BEGIN TRANSACTION READ ONLY")
                db.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(time_limit * 1000)}",))
                # Prepared: the extended protocol refuses a second statement (no `COMMIT; SET ...; DELETE`).
                cursor = db.execute(statement.encode(), prepare=True)
                rows: list[Row] = []
                size = 2
                for row in cursor if cursor.description is not None else ():
                    item = row_object(row)
                    size += (
                        len(json.dumps(item, separators=(",", ":"), ensure_ascii=False, default=str).encode())
                        + 1
                    )
                    if size > max_bytes:
                        raise AnswerTooLarge(max_bytes)
                    rows.append(item)
                db.rollback()
                return rows
        except psycopg.errors.QueryCanceled:
            raise SqlRefused(f"interrupted after {time_limit:g} s") from None
        except psycopg.Error as error:
            raise SqlRefused(str(error).strip()) from None
