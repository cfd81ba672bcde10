"""The SQLite backend: global.db (one write connection, owned by the writer thread) and `<id>.db` files.

A first startup's per-agent database is a copy of an empty template made once per run (tens of
microseconds instead of milliseconds), on the store's agent-database thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from agentpulse.paths import agent_db_name
from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.backend import Fragmentation, WriteFailed
from agentpulse.store.batch import Batch, OutboxRow
from agentpulse.store.sqlite import maintenance, schema
from agentpulse.store.sqlite.reads import SqliteReader
from agentpulse.store.sqlite.writes import SqliteWrites, insert_agents
from agentpulse.store.view import Adopted, LoadedAgent
from agentpulse.wire.keys import AgentKey

log = logging.getLogger(__name__)

WRITER_CACHE_KIB = 64 * 1024  # SQLite page cache of the writer's connection (allocated as used)
AGENT_DB_TEMPLATE = ".agent-template.db"  # an empty per-agent database, copied for each new agent
AGENT_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


# What a keep-alive writes (store/written.py `_row` order), for the agents whose columns a keep-alive set
# last: `sync_status` is what it leaves ('synced'); another value means something wrote since.
SEED_COLUMNS = (
    "SELECT id, version, config_sum, merged_sum, manager_host, node_name, ip, os_uname, os_name, os_platform, "
    "os_version, os_codename, os_major, os_minor, os_arch FROM agent "
    "WHERE id != ? AND version IS NOT NULL AND sync_status = 'synced'"
)


class SqliteBackend:
    def __init__(self, db_dir: Path, *, manager_host: str, node_name: str) -> None:
        self.db_dir = db_dir
        self.global_db = db_dir / "global.db"
        self.manager_host = manager_host
        self._writes = SqliteWrites(manager_host, node_name)
        self._db: sqlite3.Connection | None = None
        self._template: bytes | None = None

    def open(self, now: float) -> None:
        self.db_dir.mkdir(parents=True, exist_ok=True)
        schema.create_global_db(self.global_db, self.manager_host, int(now))
        self._db = schema.connect(self.global_db)
        # The default 2 MB cache holds about 5,000 agent rows: a larger fleet would read most of the pages
        # each flush updates back from the OS, once per flush.
        self._db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    def insert_missing(self, agents: list[AgentKey], now: float) -> list[int]:
        db = self._require_db()
        existing = {row[0] for row in db.execute("SELECT id FROM agent")}
        new = [a for a in agents if a.number not in existing and a.number != schema.MANAGER_ID]
        with db:
            insert_agents(db, new, int(now))
        return [agent.number for agent in new]

    def load(self) -> tuple[list[LoadedAgent], dict[int, int]]:
        db = self._require_db()
        seqs = {
            int(agent_id): int(seq)
            for agent_id, seq in db.execute(
                "SELECT agent_id, MAX(seq) FROM agent_status_history GROUP BY agent_id"
            )
        }
        # One listing of the directory, not a stat per agent: 200,000 of those took 1-2 s of the start.
        agent_dbs = set(os.listdir(self.db_dir))
        agents = [
            LoadedAgent(
                agent_id,
                ConnectionStatus(status),
                StatusCode(code or 0),
                last_keepalive,
                name,
                register_ip or "",
                agent_db_name(agent_id) in agent_dbs,
                float(date_add or 0),
                float(disconnection_time or 0),
            )
            for agent_id, status, code, last_keepalive, name, register_ip, date_add, disconnection_time in db.execute(
                "SELECT id, connection_status, status_code, last_keepalive, name, register_ip, date_add, "
                "disconnection_time FROM agent WHERE id != ?",
                (schema.MANAGER_ID,),
            )
        ]
        self._writes.written.seed(
            db.execute(SEED_COLUMNS, (schema.MANAGER_ID,)),
            db.execute("SELECT id, key, value FROM labels ORDER BY id"),
        )
        return agents, seqs

    def write(self, batch: Batch, now: float) -> None:
        db = self._require_db()
        try:
            with db:
                self._writes.write(db, batch, now)
        except sqlite3.Error as error:
            self._writes.rolled_back(batch)
            raise WriteFailed(f"global.db write failed: {error}") from error

    def agent_db_path(self, agent_id: int) -> Path:
        return self.db_dir / agent_db_name(agent_id)

    def prepare_agent_dbs(self) -> None:
        """The template every new per-agent database is copied from, made afresh by this schema version."""
        template_path = self.db_dir / AGENT_DB_TEMPLATE
        try:
            template_path.unlink(missing_ok=True)
            schema.create_agent_db(template_path)
            self._template = template_path.read_bytes()
        except (sqlite3.Error, OSError):
            log.exception("cannot create the per-agent database template %s", template_path)

    def create_agent_db(self, agent_id: int) -> None:
        try:
            schema.create_agent_db(self.agent_db_path(agent_id), self._template)
        except (sqlite3.Error, OSError):
            log.exception("cannot create the database of agent %03d", agent_id)

    def remove_agent_files(self, agent_id: int) -> None:
        path = self.agent_db_path(agent_id)
        for suffix in AGENT_DB_SUFFIXES:
            try:
                Path(f"{path}{suffix}").unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("cannot remove %s%s of removed agent %03d: %s", path, suffix, agent_id, error)

    def vacuum(self, now: float) -> int:
        return maintenance.vacuum(self._require_db(), now)

    def vacuum_agent_db(self, agent_id: int) -> int:
        return maintenance.vacuum_file(self.agent_db_path(agent_id))

    def set_node_epoch(self, epoch: int) -> None:
        """One node on SQLite holds no lease."""

    def wants_idle_flush(self) -> bool:
        return False

    def take_adopted(self) -> list[Adopted]:
        """One node: no other node takes its agents."""
        return []

    def set_outbox_encoder(self, encoder: Callable[[TransitionRow], OutboxRow] | None) -> None:
        """One writer numbers every agent's history here: the view's sequence is the database's."""

    def reader(self, *, keep_open: bool = False) -> SqliteReader:
        return SqliteReader(self.global_db, keep_open=keep_open)

    def fragmentation(self, agent_id: int | None = None) -> Fragmentation:
        return maintenance.measure(self.global_db if agent_id is None else self.agent_db_path(agent_id))
