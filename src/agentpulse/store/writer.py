"""The store: the only writer of global.db. Status rules applied in memory, rows written in batches.

`submit()` runs on the event loop and costs a dict update: it applies the status model to the store's view
of the agent, and queues what must be written. A single writer thread swaps the queued batch out and
writes it in one transaction at least every `flush_interval` seconds, so SQLite never runs on the event
loop and thousands of keep-alives cost one commit. For keep-alives the latest record per agent wins;
transitions are kept in order, each with its history row (and, later, its outbox row) in the same
transaction as the status change.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agentpulse.status import ConnectionStatus, Event, StatusCode, transition
from agentpulse.store import schema
from agentpulse.store.records import StatusUpdate, TransitionRow
from agentpulse.wire.control import Keepalive
from agentpulse.wire.keys import AgentKey

log = logging.getLogger(__name__)

DEFAULT_GROUP = "default"
STOP_RETRIES = 5
_LIVE = (ConnectionStatus.PENDING, ConnectionStatus.ACTIVE)


@dataclass(slots=True)
class AgentView:
    """What the store knows of one agent between flushes."""

    status: ConnectionStatus
    code: StatusCode
    seq: int
    last_keepalive: float | None
    seen_monotonic: float = 0.0  # for the sweeper: immune to wall-clock jumps
    labels_written: tuple[tuple[str, str], ...] | None = None
    has_agent_db: bool = False
    name: str = ""
    register_ip: str = ""


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

    def __bool__(self) -> bool:
        return bool(
            self.alerted
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
        self._batch = _Batch()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._waiters: list[threading.Event] = []
        self.listeners: list[TransitionListener] = []
        self.keepalive_listeners: list[KeepaliveListener] = []
        # Set by the events module: each transition's status event, written to event_outbox in the same
        # transaction as the status change, so a crash can lose neither without the other.
        self.outbox_encoder: OutboxEncoder | None = None
        self.on_commit: list[Callable[[int], None]] = []  # called from the writer thread with outbox rows
        self.flushes = 0
        self.write_errors = 0

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
        db.executemany(
            "INSERT OR IGNORE INTO agent (id, name, register_ip, internal_key, date_add) VALUES (?, ?, ?, ?, ?)",
            [(a.number, a.name, a.ip.text, a.key, now) for a in agents],
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
            self.agents[agent.number] = AgentView(
                ConnectionStatus.NEVER_CONNECTED,
                StatusCode.NONE,
                0,
                None,
                name=agent.name,
                register_ip=agent.ip.text,
            )
        if new:
            with self._lock:
                self._batch.new_agents.extend(new)
            self._wake.set()
        return [agent.number for agent in new]

    def _group_id(self, db: sqlite3.Connection, name: str) -> int:
        db.execute("INSERT OR IGNORE INTO `group` (name) VALUES (?)", (name,))
        row = db.execute("SELECT id FROM `group` WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def _load(self) -> None:
        db = self._require_db()
        seqs = dict(db.execute("SELECT agent_id, MAX(seq) FROM agent_status_history GROUP BY agent_id"))
        for agent_id, status, code, last_keepalive, name, register_ip in db.execute(
            "SELECT id, connection_status, status_code, last_keepalive, name, register_ip FROM agent WHERE id != ?",
            (schema.MANAGER_ID,),
        ):
            self.agents[agent_id] = AgentView(
                ConnectionStatus(status),
                StatusCode(code or 0),
                int(seqs.get(agent_id, 0)),
                last_keepalive,
                has_agent_db=self._agent_db_path(agent_id).exists(),
                name=name,
                register_ip=register_ip or "",
            )

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
        live = [agent_id for agent_id, view in self.agents.items() if view.status in _LIVE]
        for agent_id in live:
            self.submit(StatusUpdate(agent_id, Event.MANAGER_RESET, now))
        return len(live)

    def submit(self, update: StatusUpdate) -> TransitionRow | None:
        """Apply one record. Returns the transition it caused, if any. Unknown agents are ignored."""
        view = self.agents.get(update.agent_id)
        if view is None:
            return None
        event = update.event
        if update.keepalive is not None:
            for keepalive_listener in self.keepalive_listeners:
                keepalive_listener(update.agent_id, update.at, update.keepalive)
        if event is Event.STARTUP or event is Event.ALIVE:
            view.seen_monotonic = self.monotonic()
            if event is Event.STARTUP or update.keepalive is not None:
                view.last_keepalive = update.at
        with self._lock:
            batch = self._batch
            if (event is Event.ALIVE and update.keepalive is not None) or event is Event.STARTUP:
                batch.keepalives[update.agent_id] = (update.at, update.keepalive)
            if event is Event.STARTUP and not view.has_agent_db:
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
            batch.statuses[update.agent_id] = (moved.new, moved.code, update.at, update.version)
            batch.history.append(row)
            if self.outbox_encoder is not None:
                batch.outbox.append(self.outbox_encoder(row))
        for listener in self.listeners:
            listener(row)
        return row

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

    def live_agents(self) -> Iterable[tuple[int, AgentView]]:
        return ((agent_id, view) for agent_id, view in self.agents.items() if view.status in _LIVE)

    def forget(self, agent_ids: Iterable[int]) -> None:
        for agent_id in agent_ids:
            self.agents.pop(agent_id, None)

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
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def _flush(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, _Batch()
            waiters, self._waiters = self._waiters, []
        try:
            self._write_batch(batch)
        except BaseException:
            with self._lock:
                self._waiters[:0] = waiters
            raise
        for waiter in waiters:
            waiter.set()
        if batch.outbox:
            for callback in self.on_commit:
                callback(len(batch.outbox))

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
        for agent_id in batch.agent_dbs:
            try:
                schema.create_agent_db(self._agent_db_path(agent_id))
            except sqlite3.Error:
                log.exception("cannot create the database of agent %03d", agent_id)
        self.flushes += 1

    def _requeue(self, failed: _Batch) -> None:
        """Merge a batch that could not be written under what arrived since, keeping the newer values."""
        with self._lock:
            newer = self._batch
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
            self._batch = failed

    def _write(self, db: sqlite3.Connection, batch: _Batch) -> None:
        if batch.new_agents:
            self._insert_agents(db, batch.new_agents)
        data_rows, touch_rows, label_agents = [], [], []
        for agent_id, (at, keepalive) in batch.keepalives.items():
            if keepalive is None:
                touch_rows.append((int(at), agent_id))
                continue
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
            view = self.agents.get(agent_id)
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
        if touch_rows:
            db.executemany("UPDATE agent SET last_keepalive = ? WHERE id = ?", touch_rows)
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
            db.executemany(
                "INSERT INTO agent_runtime (agent_id, status_seq) VALUES (?, ?) "
                "ON CONFLICT(agent_id) DO UPDATE SET status_seq = excluded.status_seq",
                list({r.agent_id: (r.agent_id, r.seq) for r in batch.history}.values()),
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
