"""`SqliteReader`: the `Reader` (`store/reader.py`) of global.db: every read made outside the writer, as named
operations that return plain data (rows as dicts without their NULL columns, ints, dataclasses): the query
socket's, the CLIs', the events'. Each opens a read-only connection for the call (never a side file on an
idle database); a SQLite error reaches callers as `ReadFailed`.

The danger: with `keep_open` each thread keeps its connection, and one opened on an idle WAL database is
immutable, blind to later commits: only for readers running while the store has global.db open (the outbox).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from agentpulse.paths import agent_db_name
from agentpulse.store.agentsql import AgentQueryReads, Run
from agentpulse.store.backend import Fragmentation
from agentpulse.store.reader import (
    NO_LIMIT,  # SQLite's LIMIT -1
    PARTIAL_SYNCS,
    GroupCountColumn,
    HistoryEntry,
    OutboxRow,
    ReadFailed,
    Row,
    UnsyncedAgent,
)
from agentpulse.store.sqlite import agentquery, maintenance, schema
from agentpulse.store.sqlite.sandbox import read_only_query, row_object

__all__ = ["HistoryEntry", "OutboxRow", "SqliteReader", "UnsyncedAgent"]

MEMBERSHIP = schema.MEMBERSHIP


class SqliteReader(AgentQueryReads):
    """Read-only operations on global.db (`global_db`) and, given their path, the per-agent databases; the
    HTTP API's (`AgentQueryReads`) in SQLite's dialect."""

    dialect = agentquery.SQLITE

    def __init__(self, global_db: Path, *, keep_open: bool = False) -> None:
        self.global_db = global_db
        self.keep_open = keep_open
        self._kept = threading.local()

    @contextlib.contextmanager
    def _connection(self, database: Path | None = None) -> Iterator[sqlite3.Connection]:
        path = self.global_db if database is None else database
        try:
            if not self.keep_open or database is not None:
                with contextlib.closing(schema.connect(path, readonly=True)) as db:
                    yield db
                return
            kept: sqlite3.Connection | None = getattr(self._kept, "db", None)
            if kept is None:
                kept = self._kept.db = schema.connect(path, readonly=True)
            yield kept
        except sqlite3.Error as error:
            raise ReadFailed(f"{path}: {error}") from error

    @contextlib.contextmanager
    def _statements(self) -> Iterator[Run]:
        with self._connection() as db:
            yield agentquery.runner(db)

    def exists(self) -> bool:
        return self.global_db.exists()

    def agent_db(self, agent_id: int) -> Path:
        return self.global_db.parent / agent_db_name(agent_id)

    def close(self) -> None:
        """Close the connection this thread kept (`keep_open`); sqlite3 objects close on their own thread."""
        db = getattr(self._kept, "db", None)
        if db is not None:
            db.close()
            self._kept.db = None

    # -- agents ------------------------------------------------------------------------------------------

    def agent(self, agent_id: int) -> Row | None:
        """The agent row, columns in table order."""
        with self._connection() as db:
            row = db.execute("SELECT * FROM agent WHERE id = ?", (agent_id,)).fetchone()
            return None if row is None else row_object(row)

    def labels(self, agent_id: int) -> list[Row]:
        with self._connection() as db:
            return _labels(db, agent_id)

    def agent_ids(
        self, after_id: int, limit: int = NO_LIMIT, *, status: str | None = None, node: str | None = None
    ) -> list[int]:
        """Ids above `after_id` in order, of one connection_status and one node_name when given."""
        sql = "SELECT id FROM agent WHERE id > ?"
        params: list[object] = [after_id]
        if status is not None:
            sql += " AND connection_status = ?"
            params.append(status)
        if node is not None:
            sql += " AND node_name = ?"
            params.append(node)
        with self._connection() as db:
            return [row[0] for row in db.execute(sql + " ORDER BY id LIMIT ?", (*params, limit))]

    def find_agent(self, name: str, ip: str) -> list[int]:
        """Ids of the agents with this name registered from this address (or a network `<ip>/<bits>`)."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT id FROM agent WHERE name = ? AND (register_ip = ? OR register_ip LIKE ? || '/_%')",
                (name, ip, ip),
            )
            return [row[0] for row in rows]

    def statuses(self) -> dict[int, str]:
        """agent id -> connection_status, the manager included."""
        with self._connection() as db:
            rows = db.execute("SELECT id, connection_status FROM agent")
            return {int(row["id"]): str(row["connection_status"]) for row in rows}

    def names(self) -> dict[int, str]:
        """agent id -> name, the manager left out."""
        with self._connection() as db:
            rows = db.execute("SELECT id, name FROM agent WHERE id != ?", (schema.MANAGER_ID,))
            return {int(row[0]): str(row[1]) for row in rows}

    def unsynced_agents(self, after_id: int, limit: int = NO_LIMIT) -> list[UnsyncedAgent]:
        """Agents above `after_id`, in order, whose sync_status is not `synced`."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT * FROM agent WHERE id > ? AND sync_status != 'synced' ORDER BY id LIMIT ?",
                (after_id, limit),
            )
            agents = []
            for row in rows:
                full = row_object(row)
                labels = None if full.get("sync_status") in PARTIAL_SYNCS else _labels(db, full["id"])
                agents.append(UnsyncedAgent(full, labels))
            return agents

    # -- groups ------------------------------------------------------------------------------------------

    def group_names(self) -> list[str | None]:
        """Every group, oldest first."""
        with self._connection() as db:
            return [row[0] for row in db.execute("SELECT name FROM `group` ORDER BY id")]

    def group_id(self, name: str) -> int | None:
        with self._connection() as db:
            row = db.execute("SELECT id FROM `group` WHERE name = ?", (name,)).fetchone()
            return None if row is None else int(row[0])

    def group_members(
        self, name: str, after_id: int | None = None, limit: int = NO_LIMIT
    ) -> list[int] | None:
        """The agent ids of a group in order (above `after_id` when given); None when there is no group."""
        sql = f"SELECT b.id_agent FROM {MEMBERSHIP} WHERE g.name = ?"
        params: list[object] = [name]
        if after_id is not None:
            sql += " AND b.id_agent > ?"
            params.append(after_id)
        with self._connection() as db:
            if db.execute("SELECT 1 FROM `group` WHERE name = ?", (name,)).fetchone() is None:
                return None
            return [row[0] for row in db.execute(sql + " ORDER BY b.id_agent LIMIT ?", (*params, limit))]

    def agent_groups(self, agent_id: int) -> list[str]:
        """The groups of an agent in priority order."""
        with self._connection() as db:
            rows = db.execute(
                f"SELECT g.name FROM {MEMBERSHIP} WHERE b.id_agent = ? ORDER BY b.priority", (agent_id,)
            )
            return [row[0] for row in rows]

    def group_sets(self) -> list[tuple[str, str | None]]:
        """Each distinct group list of the agents (the manager left out), with the group_hash stored for it."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT DISTINCT `group`, group_hash FROM agent WHERE id > ? AND `group` IS NOT NULL",
                (schema.MANAGER_ID,),
            )
            return [(row[0], row[1]) for row in rows]

    def agent_group_lists(self) -> list[tuple[int, str | None, str]]:
        """(id, `group` CSV, group_config_status) of every agent but the manager: the rollout's start."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT id, `group`, group_config_status FROM agent WHERE id > ? ORDER BY id",
                (schema.MANAGER_ID,),
            )
            return [(row[0], row[1], row[2]) for row in rows]

    def group_config_counts(self) -> dict[str, dict[str, int]]:
        """group name -> group_config_status -> members (`agentpulse status`, `group status`)."""
        return self._counts_by_group("group_config_status")

    def group_status_counts(self) -> dict[str, dict[str, int]]:
        """group name -> connection_status -> members, by group name."""
        return self._counts_by_group("connection_status")

    def _counts_by_group(self, column: GroupCountColumn) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        with self._connection() as db:
            for name, value, count in db.execute(
                f"SELECT g.name, a.{column}, COUNT(*) FROM {MEMBERSHIP} "
                f"JOIN agent AS a ON a.id = b.id_agent GROUP BY g.name, a.{column} ORDER BY g.name"
            ):
                counts.setdefault(name, {})[value] = count
        return counts

    # -- statuses ----------------------------------------------------------------------------------------

    def status_counts(self) -> dict[str, int]:
        """connection_status -> agents, the manager left out."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT connection_status, COUNT(*) FROM agent WHERE id != ? GROUP BY connection_status",
                (schema.MANAGER_ID,),
            )
            return {row[0]: row[1] for row in rows}

    def recent_changes(self, limit: int) -> list[HistoryEntry]:
        """The latest status changes, newest first."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT h.agent_id, a.name, h.from_status, h.to_status, h.status_code, h.at "
                "FROM agent_status_history h LEFT JOIN agent a ON a.id = h.agent_id ORDER BY h.at DESC LIMIT ?",
                (limit,),
            )
            return [HistoryEntry(*tuple(row)) for row in rows]

    # -- the events' outbox ------------------------------------------------------------------------------

    def outbox_after(self, after: int, limit: int) -> list[OutboxRow]:
        """Outbox rows above `after`, in id order."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT id, subject, msg_id, payload FROM event_outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
            return [OutboxRow(row[0], row[1], row[2], bytes(row[3])) for row in rows]

    def outbox_count(self, after: int) -> int:
        with self._connection() as db:
            row = db.execute("SELECT COUNT(*) FROM event_outbox WHERE id > ?", (after,)).fetchone()
            return int(row[0])

    # -- per-agent databases, upkeep and ad-hoc SQL ------------------------------------------------------

    def has_agent_db(self, agent_id: int) -> bool:
        return self.agent_db(agent_id).exists()

    def fim_scan(self, agent_id: int) -> tuple[int | None, int | None]:
        """start_scan and end_scan of the `fim` module in scan_info (None, None without a row or file)."""
        agent_db = self.agent_db(agent_id)
        if not agent_db.exists():
            return None, None
        with self._connection(agent_db) as db:
            row = db.execute("SELECT start_scan, end_scan FROM scan_info WHERE module = 'fim'").fetchone()
        if row is None:
            return None, None
        return row["start_scan"], row["end_scan"]

    def fragmentation(self, agent_id: int | None = None) -> Fragmentation:
        """The fragmentation of global.db, or of one agent's database."""
        with self._connection(None if agent_id is None else self.agent_db(agent_id)) as db:
            return maintenance.fragmentation(db)

    def sql(self, statement: str, *, time_limit: float, max_bytes: int) -> list[Row]:
        """One client statement on global.db, read-only (`sandbox.read_only_query`: its errors too)."""
        return read_only_query(self.global_db, statement, time_limit=time_limit, max_bytes=max_bytes)


def _labels(db: sqlite3.Connection, agent_id: int) -> list[Row]:
    return [row_object(label) for label in db.execute("SELECT * FROM labels WHERE id = ?", (agent_id,))]
