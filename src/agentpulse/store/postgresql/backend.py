"""The PostgreSQL backend: one shared database and one write connection owned by the writer thread. The
per-agent rows of first startups are written in the batch's own transaction (a few rows each, no file to
make), so they are retried with it and an outage cannot lose them.

A write that fails for a lost connection drops it; the next flush connects again (bounded by libpq's
connect_timeout), so a PostgreSQL restart costs retries, never the writer thread. The danger is a write
that half-happened: every batch is one transaction, rolled back whole on any error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from agentpulse.records import MANAGER_ID, TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.backend import Fragmentation, StoreError, WriteFailed
from agentpulse.store.batch import Batch, OutboxRow
from agentpulse.store.postgresql import schema
from agentpulse.store.postgresql.connect import redacted
from agentpulse.store.postgresql.reads import AGENT_TABLES, GLOBAL_TABLES, PostgresReader, dead_tuples
from agentpulse.store.postgresql.writes import PostgresWrites, insert_agents
from agentpulse.store.view import Adopted, LoadedAgent
from agentpulse.wire.keys import AgentKey

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
AGENT_DB_BATCH = 500  # first startups made in one transaction


class PostgresBackend:
    def __init__(self, conninfo: str, *, manager_host: str, node_name: str) -> None:
        self.conninfo = conninfo
        self.manager_host = manager_host
        self.node_name = node_name
        self._writes = PostgresWrites(manager_host, node_name)
        self._db: Conn | None = None

    def _connect(self) -> Conn:
        return psycopg.connect(self.conninfo, autocommit=True)  # transactions are explicit

    @contextlib.contextmanager
    def _opening(self, what: str) -> Iterator[None]:
        """Errors of the start (unreachable server, refused login, no rights) as one clear StoreError."""
        try:
            yield
        except psycopg.Error as error:
            raise StoreError(
                f"PostgreSQL {redacted(self.conninfo)}: cannot {what}: {str(error).strip()}"
            ) from error

    def open(self, now: float) -> None:
        with self._opening("connect or migrate"):
            self._db = self._connect()
            before = schema.migrate(self._db, self.manager_host, int(now))
        if before != schema.SCHEMA_VERSION:
            log.info(
                "PostgreSQL %s: schema version %d -> %d",
                redacted(self.conninfo),
                before,
                schema.SCHEMA_VERSION,
            )

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):
                self._db.close()
        self._db = None

    def set_node_epoch(self, epoch: int) -> None:
        """This node's lease epoch (`agentpulse.cluster`, which owns the leases), written beside each agent
        it holds from the next flush on."""
        self._writes.node_epoch = epoch

    def wants_idle_flush(self) -> bool:
        """With a lease (several nodes), every flush interval commits the node's flush mark."""
        return self._writes.node_epoch > 0

    def take_adopted(self) -> list[Adopted]:
        adopted, self._writes.adopted = self._writes.adopted, []
        return adopted

    def set_outbox_encoder(self, encoder: Callable[[TransitionRow], OutboxRow] | None) -> None:
        self._writes.encoder = encoder

    def _require_db(self) -> Conn:
        if self._db is None or self._db.closed:
            self._db = self._connect()  # after a lost connection (psycopg.Error for the caller)
        return self._db

    def insert_missing(self, agents: list[AgentKey], now: float) -> list[int]:
        db = self._require_db()
        with self._opening("insert the agents of client.keys"), db.transaction(), db.cursor() as cur:
            existing = {row[0] for row in cur.execute("SELECT id FROM agent").fetchall()}
            new = [a for a in agents if a.number not in existing and a.number != MANAGER_ID]
            insert_agents(cur, new, int(now))
        return [agent.number for agent in new]

    def load(self) -> tuple[list[LoadedAgent], dict[int, int]]:
        db = self._require_db()
        with self._opening("load the agents"), db.transaction(), db.cursor() as cur:
            seqs = {
                int(agent_id): int(seq)
                for agent_id, seq in cur.execute(
                    "SELECT agent_id, MAX(seq) FROM agent_status_history GROUP BY agent_id"
                ).fetchall()
            }
            with_data = {int(row[0]) for row in cur.execute("SELECT DISTINCT agent_id FROM agent_scan_info")}
            rows = cur.execute(
                "SELECT a.id, a.connection_status, a.status_code, a.last_keepalive, a.name, a.register_ip, "
                "a.date_add, a.disconnection_time, COALESCE(r.node_name <> %s, false) FROM agent a "
                "LEFT JOIN agent_runtime r ON r.agent_id = a.id WHERE a.id != %s",
                (self.node_name, MANAGER_ID),
            ).fetchall()
        agents = [
            LoadedAgent(
                agent_id,
                ConnectionStatus(status),
                StatusCode(code or 0),
                last_keepalive,
                name,
                register_ip or "",
                agent_id in with_data,
                float(date_add or 0),
                float(disconnection_time or 0),
                bool(elsewhere),
            )
            for (
                agent_id,
                status,
                code,
                last_keepalive,
                name,
                register_ip,
                date_add,
                disconnection_time,
                elsewhere,
            ) in rows
        ]
        return agents, seqs

    def write(self, batch: Batch, now: float) -> None:
        try:
            db = self._require_db()
            with db.transaction():
                self._writes.write(db, batch, now)
            self._writes.committed()
        except psycopg.Error as error:
            self._writes.rolled_back(batch)
            if self._db is not None and (self._db.closed or self._db.broken):
                self._db = None
            raise WriteFailed(f"PostgreSQL write failed: {str(error).strip()}") from error

    # -- per-agent data: rows in agent_scan_info / agent_sync_info ----------------------------------------

    def prepare_agent_dbs(self) -> None:
        """Nothing to prepare."""

    def create_agent_db(self, agent_id: int) -> None:
        """Nothing to do: the batch that asked for it wrote its rows (`writes.PostgresWrites.write`)."""

    def remove_agent_files(self, agent_id: int) -> None:
        """Nothing to do: the batch that removed the agent deleted its rows."""

    # -- maintenance ----------------------------------------------------------------------------------------

    def _vacuum(self, tables: tuple[str, ...]) -> int:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as db:  # VACUUM runs outside a transaction
                for table in tables:
                    db.execute(psycopg.sql.SQL("VACUUM (ANALYZE) {}").format(psycopg.sql.Identifier(table)))
                return dead_tuples(db, tables).fragmentation
        except psycopg.Error as error:
            raise WriteFailed(f"PostgreSQL vacuum failed: {str(error).strip()}") from error

    def vacuum(self, now: float) -> int:
        after = self._vacuum(GLOBAL_TABLES)
        db = self._require_db()
        with db.transaction():
            db.execute(
                "INSERT INTO metadata (key, value) VALUES ('last_vacuum_time', %s), ('last_vacuum_value', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(int(now)), str(after)),
            )
        return after

    def vacuum_agent_db(self, agent_id: int) -> int:
        return self._vacuum(AGENT_TABLES)

    def vacuum_tables(self, agent_id: int | None) -> int:
        """A vacuum from outside the manager (`agentpulse db vacuum` with no manager running)."""
        return self._vacuum(GLOBAL_TABLES if agent_id is None else AGENT_TABLES)

    def fragmentation(self, agent_id: int | None = None) -> Fragmentation:
        reader = PostgresReader(self.conninfo)
        try:
            return reader.fragmentation(agent_id)
        finally:
            reader.close()

    def reader(self, *, keep_open: bool = False) -> PostgresReader:
        return PostgresReader(self.conninfo)
