"""The store: the only writer of global.db. Status rules applied in memory, rows written in batches.

`submit()` runs on the event loop and costs a dict update: it applies the status model to the store's view
of the agent, and queues what must be written. A single writer thread swaps the queued batch out and
writes it in one transaction at least every `flush_interval` seconds, so SQLite never runs on the event
loop and thousands of keep-alives cost one commit. For keep-alives the latest record per agent wins;
transitions are kept in order, each with its history row and its outbox row in the same transaction as
the status change.

The query socket (`store/wdb.py`) writes through the same door: its status commands become events for the
status model, and its other writes (agents inserted or removed, groups, cluster sync columns) ride in the
batch too, so every write keeps its order against the status changes around it. Jobs that need the write
connection itself (vacuum) run on the writer thread right after the batch that was pending when they were
queued, so they see everything accepted before them.

Removal (delete-agent, or an agent purged from client.keys) is recorded as one last history row and status
event to `disconnected`, the CHECK values of the Wazuh schema being the only statuses there are: an agent
not yet disconnected goes `-> disconnected` with code 0, one already disconnected repeats its status and
code. The status model never produces either (a disconnection always carries a reason code, and a real
transition always changes something), so consumers can tell a removal from a disconnection; the agent's
row is then gone from global.db, its history stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import LIVE, ConnectionStatus, StatusCode, Trigger, transition
from agentpulse.store import schema
from agentpulse.wire.control import Keepalive
from agentpulse.wire.keys import AgentKey

log = logging.getLogger(__name__)

DEFAULT_GROUP = "default"
WRITER_CACHE_KIB = 64 * 1024  # SQLite page cache of the writer's connection (allocated as used)
AGENT_DB_TEMPLATE = ".agent-template.db"  # an empty per-agent database, copied for each new agent
GROUP_HASH_SIZE = 8  # Wazuh's WDB_GROUP_HASH_SIZE: the first 8 hex digits of the SHA-1 of the group list
STOP_RETRIES = 5
SYNC_STATUSES = ("synced", "syncreq", "syncreq_status", "syncreq_keepalive")
AGENT_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")
T = TypeVar("T")


def group_hash(groups: Iterable[str]) -> str | None:
    """Wazuh's group_hash: SHA-1 of the comma-separated group list, first 8 hex digits; None for no group."""
    csv = ",".join(groups)
    return hashlib.sha1(csv.encode()).hexdigest()[:GROUP_HASH_SIZE] if csv else None


@dataclass(slots=True)
class AgentView:
    """What the store knows of one agent between flushes."""

    status: ConnectionStatus
    code: StatusCode
    seq: int
    last_keepalive: float | None
    seen_monotonic: float = 0.0  # for the sweeper: immune to wall-clock jumps
    labels_written: tuple[tuple[str, str], ...] | None = None
    data_written: Keepalive | None = None  # the keep-alive whose columns global.db holds
    has_agent_db: bool = False
    name: str = ""
    register_ip: str = ""


@dataclass(frozen=True, slots=True)
class InsertedAgent:
    """An agent row from `global insert-agent` (the agent may not be in client.keys)."""

    id: int
    name: str
    ip: str | None
    register_ip: str | None
    internal_key: str | None
    groups: tuple[str, ...]
    date_add: int


@dataclass(frozen=True, slots=True)
class GroupChange:
    """One change of `group`/`belongs`, applied in order.

    kind `create` and `delete` name a group (`groups[0]`); `set` gives an agent its groups by `mode`
    (Wazuh's set-agent-groups: override, append, empty_only, remove). Priorities stay dense (0, 1, ...) in
    the order given, `agent.group` is the comma-separated list in that order and `group_hash` its hash; an
    agent left with no group goes back to `default`, as Wazuh does.
    """

    kind: str
    groups: tuple[str, ...]
    agent_id: int = 0
    mode: str = "override"
    sync_status: str = "synced"


@dataclass(frozen=True, slots=True)
class ColumnUpdate:
    """Descriptive columns of one agent from the cluster sync (`sync-agent-info-set`), labels optional."""

    agent_id: int
    columns: dict[str, Any]
    labels: tuple[tuple[str, str], ...] | None


@dataclass(slots=True)
class _Batch:
    keepalives: dict[int, tuple[float, Keepalive | None]] = field(default_factory=dict)
    statuses: dict[int, tuple[ConnectionStatus, StatusCode, float | None, str | None]] = field(
        default_factory=dict
    )
    history: list[TransitionRow] = field(default_factory=list)
    runtime_states: dict[int, tuple[str, float]] = field(default_factory=dict)
    event_counts: dict[int, int] = field(default_factory=dict)
    agent_dbs: set[int] = field(default_factory=set)
    new_agents: list[AgentKey] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    outbox_acked: list[int] = field(default_factory=list)
    alerted: list[tuple[int, int]] = field(default_factory=list)
    inserted: dict[int, InsertedAgent] = field(default_factory=dict)
    deleted: dict[int, bool] = field(default_factory=dict)  # agent -> also remove its files
    group_changes: list[GroupChange] = field(default_factory=list)
    column_updates: list[ColumnUpdate] = field(default_factory=list)
    sync_statuses: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.alerted
            or self.inserted
            or self.deleted
            or self.group_changes
            or self.column_updates
            or self.sync_statuses
            or self.new_agents
            or self.outbox
            or self.outbox_acked
            or self.keepalives
            or self.statuses
            or self.history
            or self.runtime_states
            or self.event_counts
            or self.agent_dbs
        )


TransitionListener = Callable[[TransitionRow], None]
KeepaliveListener = Callable[[int, float, Keepalive], None]
OutboxRow = tuple[str, str, bytes]  # subject, Nats-Msg-Id, payload
OutboxEncoder = Callable[[TransitionRow], OutboxRow]


class Store:
    def __init__(
        self,
        db_dir: Path,
        *,
        manager_host: str,
        node_name: str,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db_dir = db_dir
        self.global_db = db_dir / "global.db"
        self.manager_host = manager_host
        self.node_name = node_name
        self.flush_interval = flush_interval
        self.clock = clock
        self.monotonic = monotonic
        self.agents: dict[int, AgentView] = {}
        # Agents the store heard from, the longest silent first (loop thread only): the sweeper reads
        # from the front and stops at the first recent one, instead of walking every agent each second.
        self.heard: OrderedDict[int, None] = OrderedDict()
        self._batch = _Batch()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._waiters: list[Callable[[], None]] = []  # called once what was accepted before is committed
        self._jobs: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = []
        self._retired: dict[int, int] = {}  # last history seq of removed agents, should their id come back
        self._closed = False
        self.listeners: list[TransitionListener] = []
        self.keepalive_listeners: list[KeepaliveListener] = []
        # Set by the events module: each transition's status event, written to event_outbox in the same
        # transaction as the status change, so a crash can lose neither without the other.
        self.outbox_encoder: OutboxEncoder | None = None
        self.on_commit: list[Callable[[int], None]] = []  # called from the writer thread with outbox rows
        self.flushes = 0
        self.write_errors = 0
        # Creating a per-agent database costs about 2 ms: on the writer thread, 5,000 first startups
        # would hold every status write back by 10 s. A thread of its own takes them in the background.
        self._agent_dbs: queue.SimpleQueue[int | Callable[[], object] | None] = queue.SimpleQueue()
        self._agent_db_thread: threading.Thread | None = None

    # -- start and stop (called from a thread, never from the event loop) -------------------------------

    def open(self, agents: Iterable[AgentKey]) -> None:
        """Create or open global.db, register the agents of client.keys, load the view, start the writer.

        The writer thread owns the SQLite connection from the first statement to the last, so the
        opening work runs on it too; this call waits for it and re-raises what it raised.
        """
        self.db_dir.mkdir(parents=True, exist_ok=True)
        ready = threading.Event()
        failure: list[BaseException] = []
        agent_list = list(agents)

        def run() -> None:
            try:
                schema.create_global_db(self.global_db, self.manager_host, int(self.clock()))
                self._db = schema.connect(self.global_db)
                # The default 2 MB cache holds about 5,000 agent rows: a larger fleet would read most of
                # the pages each flush updates back from the OS, once per flush.
                self._db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
                self.sync_agents(agent_list)
                self._load()
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            self._run()

        self._thread = threading.Thread(target=run, name="store-writer", daemon=True)
        self._thread.start()
        self._agent_db_thread = threading.Thread(
            target=self._create_agent_dbs, name="store-agent-dbs", daemon=True
        )
        self._agent_db_thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def close(self) -> None:
        """Write everything accepted so far, then stop the writer thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._agent_db_thread is not None:
            self._agent_dbs.put(None)
            self._agent_db_thread.join()
            self._agent_db_thread = None
        with self._lock:
            self._closed = True
            jobs, self._jobs = self._jobs, []
        for _, future in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the store is closed"))

    def sync_agents(self, agents: Iterable[AgentKey]) -> list[int]:
        """Insert agents of client.keys that global.db lacks, as never_connected. Returns the new ids.

        Called before the writer starts; afterwards use add_agents(), which goes through the writer.
        """
        db = self._require_db()
        existing = {row[0] for row in db.execute("SELECT id FROM agent")}
        new = [
            agent for agent in agents if agent.number not in existing and agent.number != schema.MANAGER_ID
        ]
        with db:
            self._insert_agents(db, new)
        return [agent.number for agent in new]

    def _insert_agents(self, db: sqlite3.Connection, agents: list[AgentKey]) -> None:
        now = int(self.clock())
        default_hash = group_hash([DEFAULT_GROUP])
        db.executemany(
            "INSERT OR IGNORE INTO agent (id, name, register_ip, internal_key, date_add, group_hash) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(a.number, a.name, a.ip.text, a.key, now, default_hash) for a in agents],
        )
        group_id = self._group_id(db, DEFAULT_GROUP)
        db.executemany(
            "INSERT OR IGNORE INTO belongs (id_agent, id_group, priority) VALUES (?, ?, 0)",
            [(a.number, group_id) for a in agents],
        )

    def add_agents(self, agents: Iterable[AgentKey]) -> list[int]:
        """Loop side: accept agents that client.keys gained while running; the writer inserts them."""
        new = [a for a in agents if a.number not in self.agents and a.number != schema.MANAGER_ID]
        for agent in new:
            self._add_view(agent.number, agent.name, agent.ip.text)
        if new:
            with self._lock:
                self._batch.new_agents.extend(new)
            self._wake.set()
        return [agent.number for agent in new]

    def _add_view(self, agent_id: int, name: str, register_ip: str) -> None:
        """A new agent, never connected; its history goes on from a removed agent with the same id."""
        self.agents[agent_id] = AgentView(
            ConnectionStatus.NEVER_CONNECTED,
            StatusCode.NONE,
            self._retired.pop(agent_id, 0),
            None,
            name=name,
            register_ip=register_ip,
        )

    def _group_id(self, db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT id FROM `group` WHERE name = ?", (name,)).fetchone()
        if row is None:  # not INSERT OR IGNORE: an ignored insert still uses up an AUTOINCREMENT id
            return int(db.execute("INSERT INTO `group` (name) VALUES (?)", (name,)).lastrowid or 0)
        return int(row[0])

    def _load(self) -> None:
        db = self._require_db()
        seqs = dict(db.execute("SELECT agent_id, MAX(seq) FROM agent_status_history GROUP BY agent_id"))
        self._retired = dict(seqs)  # what is left once the agents of global.db are taken out, below
        for agent_id, status, code, last_keepalive, name, register_ip in db.execute(
            "SELECT id, connection_status, status_code, last_keepalive, name, register_ip FROM agent WHERE id != ?",
            (schema.MANAGER_ID,),
        ):
            view = self.agents[agent_id] = AgentView(
                ConnectionStatus(status),
                StatusCode(code or 0),
                int(seqs.get(agent_id, 0)),
                last_keepalive,
                has_agent_db=self._agent_db_path(agent_id).exists(),
                name=name,
                register_ip=register_ip or "",
            )
            if view.status in LIVE:  # not heard from in this run: the first the sweeper looks at
                self.heard[agent_id] = None
            self._retired.pop(agent_id, None)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    def _agent_db_path(self, agent_id: int) -> Path:
        return self.db_dir / f"{agent_id:03d}.db"

    # -- the loop side: cheap, in memory -----------------------------------------------------------------

    def reset_connections(self) -> int:
        """Manager start: every pending or active agent becomes disconnected with code 5."""
        now = self.clock()
        live = [agent_id for agent_id, view in self.agents.items() if view.status in LIVE]
        for agent_id in live:
            self.submit(StatusUpdate(agent_id, Trigger.MANAGER_RESET, now))
        return len(live)

    def submit(self, update: StatusUpdate) -> TransitionRow | None:
        """Apply one record. Returns the transition it caused, if any. Unknown agents are ignored."""
        view = self.agents.get(update.agent_id)
        if view is None:
            return None
        event = update.trigger
        if update.keepalive is not None:
            for keepalive_listener in self.keepalive_listeners:
                keepalive_listener(update.agent_id, update.at, update.keepalive)
        if event is Trigger.STARTUP or event is Trigger.ALIVE:
            self._heard_from(update.agent_id, view, self.monotonic())
            if event is Trigger.STARTUP or update.keepalive is not None:
                view.last_keepalive = update.at
        with self._lock:
            batch = self._batch
            if (event is Trigger.ALIVE and update.keepalive is not None) or event is Trigger.STARTUP:
                batch.keepalives[update.agent_id] = (update.at, update.keepalive)
            if event is Trigger.STARTUP and not view.has_agent_db:
                view.has_agent_db = True
                batch.agent_dbs.add(update.agent_id)
            moved = transition(view.status, event, update.code)
            if moved is None or (moved.new is view.status and moved.code is view.code):
                return None
            view.seq += 1
            row = TransitionRow(
                update.agent_id, view.seq, view.status, moved.new, moved.code, update.at, view.last_keepalive
            )
            view.status, view.code = moved.new, moved.code
            if moved.new is ConnectionStatus.DISCONNECTED:
                self.heard.pop(update.agent_id, None)
            batch.statuses[update.agent_id] = (moved.new, moved.code, update.at, update.version)
            batch.history.append(row)
            if self.outbox_encoder is not None:
                batch.outbox.append(self.outbox_encoder(row))
        for listener in self.listeners:
            listener(row)
        return row

    def submit_repeats(
        self, agent_ids: list[int], ats: list[float], keepalives: dict[int, Keepalive]
    ) -> None:
        """Keep-alives that repeat each agent's last one (`keepalives`), in arrival order: what `submit`
        does for each, with one lock and no record objects for the common case, an agent already active.
        """
        agents, listeners = self.agents, self.keepalive_listeners
        monotonic = self.monotonic()
        others: list[StatusUpdate] = []
        with self._lock:
            pending = self._batch.keepalives
            for agent_id, at in zip(agent_ids, ats, strict=True):
                view = agents.get(agent_id)
                keepalive = keepalives.get(agent_id)
                if view is None or keepalive is None:
                    continue
                if view.status is not ConnectionStatus.ACTIVE or others:
                    # a transition (or anything after one, to keep the order): the general path
                    others.append(StatusUpdate(agent_id, Trigger.ALIVE, at, keepalive=keepalive))
                    continue
                for listener in listeners:
                    listener(agent_id, at, keepalive)
                self._heard_from(agent_id, view, monotonic)
                view.last_keepalive = at
                pending[agent_id] = (at, keepalive)
        for update in others:
            self.submit(update)

    def record_state(self, agent_id: int, state_json: str) -> None:
        """An agent's answer to `getstate`, shown by agent_control -i."""
        if agent_id in self.agents:
            with self._lock:
                self._batch.runtime_states[agent_id] = (state_json, self.clock())

    def count_events(self, counts: dict[int, int]) -> None:
        with self._lock:
            batch = self._batch.event_counts
            for agent_id, count in counts.items():
                batch[agent_id] = batch.get(agent_id, 0) + count

    def mark_alerted(self, agent_id: int, seq: int) -> None:
        """The disconnection alert for this transition was raised."""
        with self._lock:
            self._batch.alerted.append((agent_id, seq))

    def ack_outbox(self, row_ids: Iterable[int]) -> None:
        """Events acknowledged by NATS: the writer deletes their outbox rows (any thread may call this)."""
        with self._lock:
            self._batch.outbox_acked.extend(row_ids)

    def _heard_from(self, agent_id: int, view: AgentView, monotonic: float) -> None:
        view.seen_monotonic = monotonic
        heard = self.heard
        heard[agent_id] = None
        heard.move_to_end(agent_id)

    def live_agents(self) -> Iterable[tuple[int, AgentView]]:
        return ((agent_id, view) for agent_id, view in self.agents.items() if view.status in LIVE)

    # -- the loop side: writes from the query socket -----------------------------------------------------

    def touch(self, agent_id: int, at: float) -> None:
        """`update-keepalive`: last_keepalive = at, without the data of a keep-alive body."""
        view = self.agents.get(agent_id)
        if view is None:
            return
        view.last_keepalive = at
        self._heard_from(agent_id, view, self.monotonic())
        with self._lock:
            current = self._batch.keepalives.get(agent_id)
            if current is None or current[1] is None:
                self._batch.keepalives[agent_id] = (at, None)

    def set_sync_status(self, agent_id: int, sync_status: str) -> None:
        """The cluster bookkeeping value a command asked for (never a downgrade, see `_write`)."""
        if agent_id in self.agents:
            with self._lock:
                self._batch.sync_statuses[agent_id] = sync_status

    def insert_agent(self, agent: InsertedAgent) -> bool:
        """`insert-agent`: False when the id is taken (the manager's included)."""
        if agent.id in self.agents or agent.id == schema.MANAGER_ID:
            return False
        self._add_view(agent.id, agent.name, agent.register_ip or "")
        with self._lock:
            self._batch.inserted[agent.id] = agent
        self._wake.set()
        return True

    def remove_agents(
        self, agent_ids: Iterable[int], at: float, *, purge_files: bool = False
    ) -> list[TransitionRow]:
        """Delete agents from global.db (labels and groups go with them), each with its removal row and
        status event (see the module docstring). With purge_files, its `<id>.db` goes too."""
        rows: list[TransitionRow] = []
        for agent_id in agent_ids:
            view = self.agents.pop(agent_id, None)
            self.heard.pop(agent_id, None)
            if view is None:
                continue
            code = view.code if view.status is ConnectionStatus.DISCONNECTED else StatusCode.NONE
            view.seq += 1
            self._retired[agent_id] = view.seq
            row = TransitionRow(
                agent_id, view.seq, view.status, ConnectionStatus.DISCONNECTED, code, at, view.last_keepalive
            )
            with self._lock:
                batch = self._batch
                for pending in (
                    batch.keepalives,
                    batch.statuses,
                    batch.runtime_states,
                    batch.event_counts,
                    batch.inserted,
                    batch.sync_statuses,
                ):
                    pending.pop(agent_id, None)
                batch.agent_dbs.discard(agent_id)
                batch.new_agents = [a for a in batch.new_agents if a.number != agent_id]
                batch.deleted[agent_id] = purge_files or batch.deleted.get(agent_id, False)
                batch.history.append(row)
                if self.outbox_encoder is not None:
                    batch.outbox.append(self.outbox_encoder(row))
            rows.append(row)
            for listener in self.listeners:
                listener(row)
        if rows:
            self._wake.set()
        return rows

    def change_groups(self, changes: Iterable[GroupChange]) -> None:
        with self._lock:
            self._batch.group_changes.extend(changes)
        self._wake.set()

    def update_columns(self, update: ColumnUpdate) -> None:
        """`sync-agent-info-set`: the descriptive columns; statuses go through `submit()` separately."""
        if update.agent_id in self.agents:
            with self._lock:
                self._batch.column_updates.append(update)

    def committed(self) -> Future[None]:
        """A future done once everything accepted before this call is committed (for the query socket)."""
        future: Future[None] = Future()

        def done() -> None:
            if not future.done():
                future.set_result(None)

        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError("the store is closed"))
                return future
            self._waiters.append(done)
        self._wake.set()
        return future

    def call(self, job: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run `job(write_connection)` on the writer thread, after the batch pending now is committed.

        For work that needs the write connection outside a transaction (VACUUM). The job owns its
        transactions and must leave none open.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError("the store is closed"))
                return future
            self._jobs.append((job, future))
        self._wake.set()
        return future

    def agent_db_path(self, agent_id: int) -> Path:
        return self._agent_db_path(agent_id)

    # -- the writer thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._flush()
            except sqlite3.Error:
                # The batch is put back by _flush; the next round retries. A full disk must not lose
                # accepted status changes.
                self.write_errors += 1
                log.exception("global.db write failed; retrying in %.1f s", self.flush_interval)
                if stopping and self.write_errors > STOP_RETRIES:
                    log.error("giving up on the last batch at shutdown after %d failures", STOP_RETRIES)
                    break
            if stopping and not self._batch:
                break
            self._wake.wait(self.flush_interval)
            self._wake.clear()
        if self._db is not None:
            self._db.close()
            self._db = None

    def flush_soon(self) -> None:
        self._wake.set()

    def flush_wait(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted before this call is committed (for start-up and tests)."""
        done = threading.Event()
        with self._lock:
            self._waiters.append(done.set)
        self._wake.set()
        return done.wait(timeout)

    def _flush(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, _Batch()
            waiters, self._waiters = self._waiters, []
            jobs, self._jobs = self._jobs, []
        try:
            self._write_batch(batch)
        except BaseException:
            with self._lock:
                self._waiters[:0] = waiters
                self._jobs[:0] = jobs
            raise
        if batch.agent_dbs and self._agent_db_thread is not None:
            # Those waiting for this commit also wait for the databases it asked for: the creation
            # thread calls them after it has made them.
            self._agent_dbs.put(lambda: [waiter() for waiter in waiters])
        else:
            for waiter in waiters:
                waiter()
        if batch.outbox:
            for callback in self.on_commit:
                callback(len(batch.outbox))
        db = self._require_db()
        for job, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = job(db)
            except BaseException as exc:
                if db.in_transaction:
                    db.rollback()
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _write_batch(self, batch: _Batch) -> None:
        if not batch:
            return
        db = self._require_db()
        try:
            with db:
                self._write(db, batch)
        except sqlite3.Error:
            self._requeue(batch)
            raise
        for agent_id, purge in batch.deleted.items():
            if purge:
                self._remove_agent_files(agent_id)
        for agent_id in batch.agent_dbs:
            self._agent_dbs.put(agent_id)
        self.flushes += 1

    def _create_agent_dbs(self) -> None:
        template_path = self.db_dir / AGENT_DB_TEMPLATE
        template: bytes | None = None
        try:
            template_path.unlink(missing_ok=True)  # made afresh by this version of the schema
            schema.create_agent_db(template_path)
            template = template_path.read_bytes()
        except (sqlite3.Error, OSError):
            log.exception("cannot create the per-agent database template %s", template_path)
        while (agent_id := self._agent_dbs.get()) is not None:
            if callable(agent_id):
                agent_id()
                continue
            if agent_id not in self.agents:
                continue  # removed since its first startup
            try:
                schema.create_agent_db(self._agent_db_path(agent_id), template)
            except (sqlite3.Error, OSError):
                log.exception("cannot create the database of agent %03d", agent_id)

    def _remove_agent_files(self, agent_id: int) -> None:
        path = self._agent_db_path(agent_id)
        for suffix in AGENT_DB_SUFFIXES:
            try:
                Path(f"{path}{suffix}").unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("cannot remove %s%s of removed agent %03d: %s", path, suffix, agent_id, error)

    def _requeue(self, failed: _Batch) -> None:
        """Merge a batch that could not be written under what arrived since, keeping the newer values."""
        for agent_id in failed.keepalives:
            view = self.agents.get(agent_id)
            if view is not None:  # what _write thought it wrote was rolled back
                view.data_written = None
                view.labels_written = None
        with self._lock:
            newer = self._batch
            # Agents removed since: what the failed batch still held for them goes first (what the newer
            # batch holds for them arrived after a re-insertion, and stays).
            for agent_id, purge in newer.deleted.items():
                for pending in (
                    failed.keepalives,
                    failed.statuses,
                    failed.runtime_states,
                    failed.event_counts,
                    failed.inserted,
                    failed.sync_statuses,
                ):
                    pending.pop(agent_id, None)
                failed.new_agents = [a for a in failed.new_agents if a.number != agent_id]
                failed.agent_dbs.discard(agent_id)
                failed.deleted[agent_id] = purge or failed.deleted.get(agent_id, False)
            failed.keepalives.update(newer.keepalives)
            failed.statuses.update(newer.statuses)
            failed.history.extend(newer.history)
            failed.runtime_states.update(newer.runtime_states)
            for agent_id, count in newer.event_counts.items():
                failed.event_counts[agent_id] = failed.event_counts.get(agent_id, 0) + count
            failed.agent_dbs |= newer.agent_dbs
            failed.new_agents.extend(newer.new_agents)
            failed.outbox.extend(newer.outbox)
            failed.outbox_acked.extend(newer.outbox_acked)
            failed.alerted.extend(newer.alerted)
            failed.inserted.update(newer.inserted)
            failed.group_changes.extend(newer.group_changes)
            failed.column_updates.extend(newer.column_updates)
            failed.sync_statuses.update(newer.sync_statuses)
            self._batch = failed

    def _write(self, db: sqlite3.Connection, batch: _Batch) -> None:
        # Deletions first, then insertions: an id removed and added again within one batch ends up added.
        reinserted = {a.number for a in batch.new_agents} | set(batch.inserted)
        if batch.deleted:
            gone = [(agent_id,) for agent_id in batch.deleted]
            db.executemany("DELETE FROM agent WHERE id = ?", gone)  # labels and belongs cascade
            db.executemany("DELETE FROM agent_runtime WHERE agent_id = ?", gone)
        if batch.new_agents:
            self._insert_agents(db, batch.new_agents)
        if batch.inserted:
            self._insert_rows(db, list(batch.inserted.values()))
        data_rows, label_agents = [], []
        touched: dict[int, list[int]] = {}  # last_keepalive (whole seconds) -> agents
        for agent_id, (at, keepalive) in batch.keepalives.items():
            view = self.agents.get(agent_id)
            # Most keep-alives repeat the last one: then only last_keepalive moves, a narrow update.
            if keepalive is None or (view is not None and keepalive == view.data_written):
                touched.setdefault(int(at), []).append(agent_id)
                continue
            if view is not None:
                view.data_written = keepalive
            data_rows.append(
                (
                    keepalive.version,
                    keepalive.config_sum,
                    keepalive.merged_sum,
                    self.manager_host,
                    self.node_name,
                    keepalive.agent_ip,
                    keepalive.uname,
                    keepalive.os_name,
                    keepalive.os_platform,
                    keepalive.os_version,
                    keepalive.os_codename,
                    keepalive.os_major,
                    keepalive.os_minor,
                    keepalive.os_arch,
                    int(at),
                    agent_id,
                )
            )
            if view is not None and view.labels_written != keepalive.labels:
                view.labels_written = keepalive.labels
                label_agents.append((agent_id, keepalive))
        if data_rows:
            db.executemany(
                "UPDATE agent SET version = ?, config_sum = ?, merged_sum = ?, manager_host = ?, "
                "node_name = ?, ip = COALESCE(?, ip), os_uname = ?, os_name = ?, os_platform = ?, "
                "os_version = ?, os_codename = ?, os_major = ?, os_minor = ?, os_arch = ?, "
                "last_keepalive = ?, sync_status = 'synced' WHERE id = ?",
                data_rows,
            )
        for second, agent_ids in touched.items():
            # One statement per second instead of one per agent: a flush usually spans one or two seconds,
            # and sqlite3 lets go of the GIL once per statement, not 10,000 times (each time the event
            # loop may keep it for a whole switch interval).
            db.execute(
                "UPDATE agent SET last_keepalive = ? WHERE id IN (SELECT value FROM json_each(?))",
                (second, json.dumps(agent_ids)),
            )
        for agent_id, keepalive in label_agents:
            self._write_labels(db, agent_id, keepalive)
        if batch.statuses:
            db.executemany(
                "UPDATE agent SET connection_status = ?, status_code = ?, "
                "disconnection_time = CASE WHEN ? = 'disconnected' THEN ? ELSE 0 END, "
                "version = COALESCE(?, version) WHERE id = ?",
                [
                    (status.value, int(code), status.value, int(at or 0), version, agent_id)
                    for agent_id, (status, code, at, version) in batch.statuses.items()
                ],
            )
        if batch.history:
            db.executemany(
                "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.agent_id, r.seq, r.from_status.value, r.to_status.value, int(r.code), r.at)
                    for r in batch.history
                ],
            )
            removed = batch.deleted.keys() - reinserted
            db.executemany(
                "INSERT INTO agent_runtime (agent_id, status_seq) VALUES (?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET status_seq = excluded.status_seq",
                list(
                    {
                        r.agent_id: (r.agent_id, r.seq) for r in batch.history if r.agent_id not in removed
                    }.values()
                ),
            )
        if batch.outbox:
            now = self.clock()
            db.executemany(
                "INSERT INTO event_outbox (subject, msg_id, payload, created) VALUES (?, ?, ?, ?)",
                [(subject, msg_id, payload, now) for subject, msg_id, payload in batch.outbox],
            )
        if batch.alerted:
            db.executemany(
                "UPDATE agent_status_history SET alerted = 1 WHERE agent_id = ? AND seq = ?", batch.alerted
            )
        if batch.outbox_acked:
            db.executemany(
                "DELETE FROM event_outbox WHERE id = ?", [(row_id,) for row_id in batch.outbox_acked]
            )
        if batch.runtime_states:
            db.executemany(
                "INSERT INTO agent_runtime (agent_id, state_json, state_at) VALUES (?, ?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET state_json = excluded.state_json, "
                "state_at = excluded.state_at",
                [(agent_id, text, at) for agent_id, (text, at) in batch.runtime_states.items()],
            )
        if batch.event_counts:
            db.executemany(
                "INSERT INTO agent_runtime (agent_id, events_received) VALUES (?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET "
                "events_received = events_received + excluded.events_received",
                list(batch.event_counts.items()),
            )
        for change in batch.group_changes:
            self._change_groups(db, change)
        for update in batch.column_updates:
            self._update_columns(db, update)
        if batch.sync_statuses:
            # wdb_global_validate_sync_status(): never downgrade what the cluster still has to send.
            db.executemany(
                "UPDATE agent SET sync_status = CASE "
                "WHEN sync_status = 'syncreq' AND ?1 NOT IN ('synced', 'syncreq') THEN sync_status "
                "WHEN sync_status = 'syncreq_status' AND ?1 = 'syncreq_keepalive' THEN sync_status "
                "ELSE ?1 END WHERE id = ?2",
                [(value, agent_id) for agent_id, value in batch.sync_statuses.items()],
            )

    def _insert_rows(self, db: sqlite3.Connection, agents: list[InsertedAgent]) -> None:
        db.executemany(
            "INSERT INTO agent (id, name, ip, register_ip, internal_key, date_add, `group`, group_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    a.id,
                    a.name,
                    a.ip,
                    a.register_ip,
                    a.internal_key,
                    a.date_add,
                    ",".join(a.groups) or None,
                    group_hash(a.groups),
                )
                for a in agents
            ],
        )
        for agent in agents:
            if agent.groups:
                self._write_groups(db, agent.id, list(agent.groups), "synced")

    # -- groups (writer thread) --------------------------------------------------------------------------

    def _agent_groups(self, db: sqlite3.Connection, agent_id: int) -> list[str]:
        return [
            row[0]
            for row in db.execute(
                "SELECT g.name FROM belongs AS b JOIN `group` AS g ON g.id = b.id_group "
                "WHERE b.id_agent = ? ORDER BY b.priority",
                (agent_id,),
            )
        ]

    def _write_groups(self, db: sqlite3.Connection, agent_id: int, groups: list[str], sync: str) -> None:
        """Give an agent exactly these groups, in this priority order, and the matching agent columns."""
        if not groups:
            groups = [DEFAULT_GROUP]
        db.execute("DELETE FROM belongs WHERE id_agent = ?", (agent_id,))
        db.executemany(
            "INSERT INTO belongs (id_agent, id_group, priority) VALUES (?, ?, ?)",
            [(agent_id, self._group_id(db, name), priority) for priority, name in enumerate(groups)],
        )
        db.execute(
            "UPDATE agent SET `group` = ?, group_hash = ?, group_sync_status = ? WHERE id = ?",
            (",".join(groups), group_hash(groups), sync, agent_id),
        )

    def _change_groups(self, db: sqlite3.Connection, change: GroupChange) -> None:
        if change.kind == "create":
            self._group_id(db, change.groups[0])
        elif change.kind == "delete":
            name = change.groups[0]
            members = [
                row[0]
                for row in db.execute(
                    "SELECT b.id_agent FROM belongs AS b JOIN `group` AS g ON g.id = b.id_group "
                    "WHERE g.name = ?",
                    (name,),
                )
            ]
            db.execute("DELETE FROM `group` WHERE name = ?", (name,))  # its belongs rows cascade
            for agent_id in members:
                self._write_groups(db, agent_id, self._agent_groups(db, agent_id), "syncreq")
        elif change.kind == "set":
            exists = db.execute("SELECT 1 FROM agent WHERE id = ?", (change.agent_id,)).fetchone()
            if exists is None:
                return
            current = self._agent_groups(db, change.agent_id)
            wanted = list(dict.fromkeys(change.groups))
            if change.mode == "append":
                groups = current + [name for name in wanted if name not in current]
            elif change.mode == "empty_only":
                if current:
                    return
                groups = wanted
            elif change.mode == "remove":
                groups = [name for name in current if name not in wanted]
            else:
                groups = wanted
            self._write_groups(db, change.agent_id, groups, change.sync_status)
        else:  # pragma: no cover - built by wdb.py only
            raise ValueError(f"unknown group change {change.kind!r}")

    def _update_columns(self, db: sqlite3.Connection, update: ColumnUpdate) -> None:
        names = [name for name in update.columns if name in schema.AGENT_COLUMNS]  # identifiers: known only
        view = self.agents.get(update.agent_id)
        if view is not None:
            view.data_written = None  # the next keep-alive writes its columns again
        if names:
            assignments = ", ".join(f"`{name}` = ?" for name in names)
            db.execute(
                f"UPDATE agent SET {assignments}, sync_status = 'synced' WHERE id = ?",
                [*(update.columns[name] for name in names), update.agent_id],
            )
        if update.labels is not None:
            db.execute("DELETE FROM labels WHERE id = ?", (update.agent_id,))
            db.executemany(
                "INSERT OR REPLACE INTO labels (id, key, value) VALUES (?, ?, ?)",
                [(update.agent_id, key, value) for key, value in update.labels],
            )
            view = self.agents.get(update.agent_id)
            if view is not None:
                view.labels_written = None  # the next keep-alive writes its own labels again

    def _write_labels(self, db: sqlite3.Connection, agent_id: int, keepalive: Keepalive) -> None:
        """Rewrite the labels table for one agent: its own labels plus the system labels Wazuh adds."""
        labels = dict(keepalive.labels)
        labels['#"_manager_hostname"'] = self.manager_host
        labels['#"_node_name"'] = self.node_name
        if keepalive.agent_ip:
            labels['#"_agent_ip"'] = keepalive.agent_ip
        if keepalive.version:
            labels['#"_wazuh_version"'] = keepalive.version
        db.execute("DELETE FROM labels WHERE id = ?", (agent_id,))
        db.executemany(
            "INSERT INTO labels (id, key, value) VALUES (?, ?, ?)",
            [(agent_id, key, value) for key, value in labels.items()],
        )
