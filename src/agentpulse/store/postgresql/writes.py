"""Every write of the PostgreSQL backend: one accepted `Batch` becomes the statements of one transaction.

Runs on the writer thread only. The shapes were chosen by bench/pg_driver.py: the per-agent updates of a
flush are one `UPDATE ... FROM unnest(arrays)` each, the history and outbox rows one COPY each, and the
keep-alives that only move `last_keepalive` one `= ANY(array)` statement per second of arrival; like the
SQLite writer it remembers which keep-alive columns the table already holds (`store/written.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.batch import (
    Batch,
    ColumnUpdate,
    GroupChange,
    GroupChangeKind,
    InsertedAgent,
    OutboxRow,
    stored_labels,
)
from agentpulse.store.groups import DEFAULT_GROUP, group_hash, regrouped
from agentpulse.store.postgresql.binding import (
    SUPERSEDED_CODES,
    Held,
    bound_agents,
    insert_outbox,
    notify_moved,
    superseded_losses,
)
from agentpulse.store.postgresql.schema import (
    AGENT_COLUMNS,
    MEMBERSHIP,
    create_agent_data,
    remove_agent_data,
)
from agentpulse.store.view import Adopted
from agentpulse.store.written import WrittenKeepalives
from agentpulse.wire.control import Keepalive
from agentpulse.wire.keys import AgentKey

Conn = psycopg.Connection[Any]

# A keep-alive whose data changed (every agent's first one after a start): one statement for the whole
# flush, not one per agent (a restart storm brings every agent's at once).
_UPDATE_KEEPALIVE = (
    "UPDATE agent AS a SET version = u.version, config_sum = u.config_sum, merged_sum = u.merged_sum, "
    "manager_host = u.manager_host, node_name = u.node_name, ip = COALESCE(u.ip, a.ip), "
    "os_uname = u.os_uname, os_name = u.os_name, os_platform = u.os_platform, os_version = u.os_version, "
    "os_codename = u.os_codename, os_major = u.os_major, os_minor = u.os_minor, os_arch = u.os_arch, "
    "last_keepalive = u.last_keepalive, sync_status = 'synced' "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], "
    "%s::int[]) AS u(version, config_sum, merged_sum, manager_host, node_name, ip, os_uname, os_name, "
    "os_platform, os_version, os_codename, os_major, os_minor, os_arch, last_keepalive, id) "
    "WHERE a.id = u.id"
)
_UPDATE_STATUSES = (
    "UPDATE agent AS a SET connection_status = u.status, status_code = u.code, "
    "disconnection_time = CASE WHEN u.status = 'disconnected' THEN u.at ELSE 0 END, "
    "version = COALESCE(u.version, a.version) "
    "FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::text[], %s::int[]) AS u(status, code, at, version, id) "
    "WHERE a.id = u.id"
)
# `changed`: this transaction's id, so the other nodes' views follow the new status (`cluster/holders.py`)
_UPSERT_SEQS = (
    "INSERT INTO agent_runtime (agent_id, status_seq, changed) "
    "SELECT a, s, pg_current_xact_id() FROM unnest(%s::int[], %s::int[]) AS u(a, s) "
    "ON CONFLICT (agent_id) DO UPDATE SET status_seq = excluded.status_seq, changed = excluded.changed"
)
_SYNC_STATUS = (
    "UPDATE agent SET sync_status = CASE "
    "WHEN sync_status = 'syncreq' AND %(v)s NOT IN ('synced', 'syncreq') THEN sync_status "
    "WHEN sync_status = 'syncreq_status' AND %(v)s = 'syncreq_keepalive' THEN sync_status "
    "ELSE %(v)s END WHERE id = %(id)s"
)


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


class PostgresWrites:
    def __init__(self, manager_host: str, node_name: str) -> None:
        self.manager_host = manager_host
        self.node_name = node_name
        self.written = WrittenKeepalives(manager_host, node_name)
        self.node_epoch = (
            0  # this node's lease epoch (agentpulse.cluster), written beside each agent it holds
        )
        self.encoder: Callable[[TransitionRow], OutboxRow] | None = None  # the store's outbox encoder
        self.adopted: list[Adopted] = []  # what the last write found of agents another node took
        self._mark: datetime | None = None  # database time at the end of the last committed flush
        self._next_mark: datetime | None = None

    def rolled_back(self, batch: Batch) -> None:
        self.adopted = []
        self._next_mark = None
        self.written.rolled_back(batch)

    def write(self, db: Conn, batch: Batch, now: float) -> None:
        reinserted = {a.number for a in batch.new_agents} | set(batch.inserted)
        self.adopted = []
        with db.cursor() as cur:
            # First: before a removal drops agent_runtime rows.
            held = self._sequence(cur, batch)
            if batch.deleted:
                gone = list(batch.deleted)
                cur.execute("DELETE FROM agent WHERE id = ANY(%s)", (gone,))  # labels and belongs cascade
                cur.execute("DELETE FROM agent_runtime WHERE agent_id = ANY(%s)", (gone,))
                purged = [agent_id for agent_id, purge in batch.deleted.items() if purge]
                if purged:
                    remove_agent_data(cur, purged)
                for agent_id in gone:
                    self.written.forget(agent_id)
            if batch.new_agents:
                insert_agents(cur, batch.new_agents, int(now))
            if batch.inserted:
                _insert_rows(cur, list(batch.inserted.values()))
            self._write_keepalives(cur, batch)
            _write_statuses(cur, batch, held.history, batch.deleted.keys() - reinserted, held.superseded)
            self._write_holders(cur, batch, held)
            _write_outbox(cur, batch)
            _write_runtime(cur, batch)
            if batch.agent_dbs:
                create_agent_data(cur, sorted(batch.agent_dbs))
            for change in batch.group_changes:
                change_groups(cur, change)
            for update in batch.column_updates:
                self._update_columns(cur, update)
            if batch.config_statuses:
                cur.executemany(
                    "UPDATE agent SET group_config_status = %(v)s WHERE id = %(id)s",
                    [{"v": value, "id": agent_id} for agent_id, value in batch.config_statuses.items()],
                )
            if batch.sync_statuses:
                cur.executemany(
                    _SYNC_STATUS,
                    [{"v": value, "id": agent_id} for agent_id, value in batch.sync_statuses.items()],
                )
            if not batch:
                # An idle flush commits only its mark: a mark lost in a crash of the database costs the
                # other nodes one more wait, so it need not wait for the WAL to reach the disk.
                cur.execute("SET LOCAL synchronous_commit TO OFF")
            self._mark_flush(cur)
            insert_outbox(cur, held.outbox, now)  # last: it holds the outbox lock until the commit

    def committed(self) -> None:
        """The transaction committed: its mark is the one the next flush publishes."""
        self._mark = self._next_mark

    def _mark_flush(self, cur: psycopg.Cursor[Any]) -> None:
        """Publish the mark read at the end of the last committed flush (everything this node accepted
        before it was in that flush or an earlier one, so it is committed now), and read the next one."""
        if not self.node_epoch:
            return
        if self._mark is not None:
            cur.execute(
                "INSERT INTO node_flush (node_name, epoch, flushed) VALUES (%s, %s, %s) ON CONFLICT "
                "(node_name) DO UPDATE SET epoch = excluded.epoch, flushed = excluded.flushed",
                (self.node_name, self.node_epoch, self._mark),
            )
        row = cur.execute("SELECT clock_timestamp()").fetchone()
        self._next_mark = row[0] if row is not None else None

    def _sequence(self, cur: psycopg.Cursor[Any], batch: Batch) -> Held:
        """The batch's history numbered by the database, its outbox encoded from those numbers, the
        agents whose loss this node must not write (`superseded`), and who held the agents it binds.

        Several nodes may write one agent (it moved, or two nodes saw it inside the grace): each node's view
        numbers rows from what it knew, so the numbers are decided here. The batch's agents'
        `agent_runtime` rows are locked (in agent order: two nodes' batches never deadlock on them) and
        each agent's rows follow its committed `status_seq`; a row whose number changed is encoded again,
        so `<id>:<seq>` stays one per transition and in order whichever node wrote it. The batch itself
        is left as it was: a rolled-back write is numbered afresh at its retry.

        An agent that moved to another node inside the grace: that node committed the agent's new binding
        (agent_runtime.node_name), so this node's late "connection lost" or "silent" (codes 6 and 4) for it
        is dropped here (row, status columns and event), decided under the same lock; so is one for an
        agent the database has disconnected already (a survivor's take-over closed it). Either way the
        view is told (`adopted`): it takes the database's status, and raises no alert for it.
        """
        bound = bound_agents(batch)
        agents = sorted({row.agent_id for row in batch.history} | bound.keys())
        if not agents:
            return Held([], list(batch.outbox), set(), {}, bound)
        # An agent without a row yet (or whose id came back after a removal) goes on from its history.
        cur.execute(
            "INSERT INTO agent_runtime (agent_id, status_seq) SELECT a, COALESCE((SELECT MAX(h.seq) "
            "FROM agent_status_history h WHERE h.agent_id = a), 0) FROM unnest(%s::int[]) AS a "
            "ON CONFLICT DO NOTHING",
            (agents,),
        )
        rows = cur.execute(
            "SELECT r.agent_id, r.status_seq, r.node_name, a.connection_status, a.status_code "
            "FROM agent_runtime r LEFT JOIN agent a ON a.id = r.agent_id WHERE r.agent_id = ANY(%s) "
            "ORDER BY r.agent_id FOR UPDATE OF r",
            (agents,),
        ).fetchall()
        last = {int(agent_id): int(seq) for agent_id, seq, *_ in rows}
        holders: dict[int, str | None] = {int(agent_id): holder for agent_id, _, holder, *_ in rows}
        committed = {
            int(agent_id): (ConnectionStatus(status), StatusCode(code or 0))
            for agent_id, _, _, status, code in rows
            if status is not None
        }
        superseded = superseded_losses(batch, holders, committed, self.node_name)
        history: list[TransitionRow] = []
        renumbered: dict[tuple[int, int], TransitionRow | None] = {}
        dropped: set[int] = set()
        first: set[int] = set()
        for row in batch.history:
            if row.agent_id in superseded and row.code in SUPERSEDED_CODES:
                renumbered[(row.agent_id, row.seq)] = None
                dropped.add(row.agent_id)
                continue
            seq = last[row.agent_id] + 1
            last[row.agent_id] = seq
            before = row.from_status
            if row.agent_id not in first:
                # An agent another node wrote since this node's view last did (it came from there):
                # its first row here goes on from the committed status, as its history and events do.
                first.add(row.agent_id)
                before = committed.get(row.agent_id, (before,))[0]
            if seq != row.seq or before is not row.from_status:
                new = dataclasses.replace(row, seq=seq, from_status=before)
                renumbered[(row.agent_id, row.seq)] = new
                row = new
            history.append(row)
        for agent_id in sorted(dropped):
            holder = holders.get(agent_id)
            status, code = committed.get(agent_id, (ConnectionStatus.DISCONNECTED, StatusCode.NONE))
            self.adopted.append(
                Adopted(agent_id, holder if holder != self.node_name else None, status, code, last[agent_id])
            )
        outbox = list(batch.outbox)
        if renumbered and len(batch.outbox_sources) == len(outbox):
            kept: list[OutboxRow] = []
            for event, source in zip(outbox, batch.outbox_sources, strict=True):
                key = (source.agent_id, source.seq)
                if key not in renumbered:
                    kept.append(event)
                elif (moved := renumbered[key]) is not None:
                    kept.append(self.encoder(moved) if self.encoder is not None else event)
            outbox = kept
        return Held(history, outbox, superseded, holders, bound)

    def _write_holders(self, cur: psycopg.Cursor[Any], batch: Batch, held: Held) -> None:
        """Which node holds each agent this batch saw live (or claimed), with this node's epoch;
        `connection_epoch` goes up by one per new connection (a transition to pending), counted by the
        database. The node that held an agent before is told (NOTIFY, delivered at the commit): it lets
        its own session go, or keeps it by the overtake rule (`cluster/bindings.py`)."""
        if not held.bound:
            return
        connections = dict.fromkeys(held.bound, 0)
        for row in batch.history:
            if row.to_status is ConnectionStatus.PENDING and row.agent_id in connections:
                connections[row.agent_id] += 1
        cur.execute(
            "INSERT INTO agent_runtime (agent_id, node_name, node_epoch, connection_epoch, bound_kept, changed) "
            "SELECT a, %s, %s, c, k, pg_current_xact_id() FROM unnest(%s::int[], %s::bigint[], %s::bool[]) "
            "AS u(a, c, k) ON CONFLICT (agent_id) DO UPDATE SET node_name = excluded.node_name, "
            "node_epoch = excluded.node_epoch, "
            "connection_epoch = agent_runtime.connection_epoch + excluded.connection_epoch, "
            "bound_kept = excluded.bound_kept, changed = excluded.changed",
            (
                self.node_name,
                self.node_epoch,
                list(connections),
                list(connections.values()),
                [held.bound[agent_id] for agent_id in connections],
            ),
        )
        notify_moved(cur, batch, held, self.node_name, self.node_epoch)

    def _write_keepalives(self, cur: psycopg.Cursor[Any], batch: Batch) -> None:
        writes = self.written.sort(batch)
        if writes.data_rows:
            cur.execute(_UPDATE_KEEPALIVE, _columns(writes.data_rows))
        for second, agent_ids in writes.touched.items():
            cur.execute("UPDATE agent SET last_keepalive = %s WHERE id = ANY(%s)", (second, agent_ids))
        if writes.label_agents:
            self._write_labels(cur, writes.label_agents)

    def _update_columns(self, cur: psycopg.Cursor[Any], update: ColumnUpdate) -> None:
        names = [name for name in update.columns if name in AGENT_COLUMNS]  # identifiers: known only
        self.written.forget_columns(update.agent_id)
        if names:
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(name)) for name in names
            )
            cur.execute(
                sql.SQL("UPDATE agent SET {}, sync_status = 'synced' WHERE id = %s").format(assignments),
                [*(update.columns[name] for name in names), update.agent_id],
            )
        if update.labels is not None:
            cur.execute("DELETE FROM labels WHERE id = %s", (update.agent_id,))
            cur.executemany(
                "INSERT INTO labels (id, key, value) VALUES (%s, %s, %s) "
                "ON CONFLICT (id, key) DO UPDATE SET value = excluded.value",
                [(update.agent_id, key, value) for key, value in update.labels],
            )
            self.written.forget_labels(update.agent_id)

    def _write_labels(self, cur: psycopg.Cursor[Any], agents: list[tuple[int, Keepalive]]) -> None:
        """The labels of agents whose keep-alive brought other ones: two statements for all of them (two
        per agent cost a restart storm thousands of round trips per flush)."""
        rows: list[tuple[int, str, str]] = []
        for agent_id, keepalive in agents:
            labels = stored_labels(keepalive, self.manager_host, self.node_name)
            rows.extend((agent_id, key, value) for key, value in labels.items())
        cur.execute("DELETE FROM labels WHERE id = ANY(%s)", ([agent_id for agent_id, _ in agents],))
        cur.execute(
            "INSERT INTO labels (id, key, value) SELECT * FROM unnest(%s::int[], %s::text[], %s::text[])",
            _columns(rows),
        )


def _write_statuses(
    cur: psycopg.Cursor[Any],
    batch: Batch,
    history: list[TransitionRow],
    removed: set[int],
    superseded: set[int],
) -> None:
    statuses = [
        (status.value, int(code), int(at or 0), version, agent_id)
        for agent_id, (status, code, at, version) in batch.statuses.items()
        if not (agent_id in superseded and code in SUPERSEDED_CODES)
    ]
    if statuses:
        cur.execute(_UPDATE_STATUSES, _columns(statuses))
    if not history:
        return
    with cur.copy(
        "COPY agent_status_history (agent_id, seq, from_status, to_status, status_code, at, reason) FROM STDIN"
    ) as copy:
        for r in history:
            reason = r.reason_text if r.overload else None
            copy.write_row(
                (r.agent_id, r.seq, r.from_status.value, r.to_status.value, int(r.code), r.at, reason)
            )
    last_seqs = {r.agent_id: (r.agent_id, r.seq) for r in history if r.agent_id not in removed}
    if last_seqs:
        cur.execute(_UPSERT_SEQS, _columns(list(last_seqs.values())))


def _write_outbox(cur: psycopg.Cursor[Any], batch: Batch) -> None:
    if batch.alerted:
        cur.execute(
            "UPDATE agent_status_history AS h SET alerted = 1 FROM unnest(%s::int[], %s::int[]) AS u(a, s) "
            "WHERE h.agent_id = u.a AND h.seq = u.s",
            _columns(batch.alerted),
        )
    if batch.outbox_acked:
        cur.execute("DELETE FROM event_outbox WHERE id = ANY(%s::bigint[])", (batch.outbox_acked,))


def _write_runtime(cur: psycopg.Cursor[Any], batch: Batch) -> None:
    if batch.runtime_states:
        cur.executemany(
            "INSERT INTO agent_runtime (agent_id, state_json, state_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (agent_id) DO UPDATE SET state_json = excluded.state_json, state_at = excluded.state_at",
            [(agent_id, text, at) for agent_id, (text, at) in batch.runtime_states.items()],
        )
    if batch.event_counts:
        cur.execute(
            "INSERT INTO agent_runtime (agent_id, events_received) SELECT * FROM unnest(%s::int[], %s::bigint[]) "
            "ON CONFLICT (agent_id) DO UPDATE SET events_received = "
            "agent_runtime.events_received + excluded.events_received",
            _columns(list(batch.event_counts.items())),
        )


def _insert_rows(cur: psycopg.Cursor[Any], agents: list[InsertedAgent]) -> None:
    cur.executemany(
        'INSERT INTO agent (id, name, ip, register_ip, internal_key, date_add, "group", group_hash) '
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
            write_groups(cur, agent.id, list(agent.groups), "synced")


def insert_agents(cur: psycopg.Cursor[Any], agents: list[AgentKey], now: int) -> None:
    """Agents of client.keys, never connected, in the default group (ids already there are left alone)."""
    if not agents:
        return
    cur.execute(
        "INSERT INTO agent (id, name, register_ip, internal_key, date_add, group_hash) "
        "SELECT u.id, u.name, u.ip, u.key, %s, %s FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[]) "
        "AS u(id, name, ip, key) ON CONFLICT (id) DO NOTHING",
        (
            now,
            group_hash([DEFAULT_GROUP]),
            *_columns([(a.number, a.name, a.ip.text, a.key) for a in agents]),
        ),
    )
    group_id = group_id_of(cur, DEFAULT_GROUP)
    cur.execute(
        "INSERT INTO belongs (id_agent, id_group, priority) SELECT a, %s, 0 FROM unnest(%s::int[]) AS a "
        "ON CONFLICT DO NOTHING",
        (group_id, [a.number for a in agents]),
    )


def group_id_of(cur: psycopg.Cursor[Any], name: str) -> int:
    row = cur.execute('SELECT id FROM "group" WHERE name = %s', (name,)).fetchone()
    if row is None:
        row = cur.execute(
            'INSERT INTO "group" (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name = excluded.name '
            "RETURNING id",
            (name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def agent_groups(cur: psycopg.Cursor[Any], agent_id: int) -> list[str]:
    rows = cur.execute(
        f"SELECT g.name FROM {MEMBERSHIP} WHERE b.id_agent = %s ORDER BY b.priority", (agent_id,)
    )
    return [row[0] for row in rows.fetchall()]


def write_groups(cur: psycopg.Cursor[Any], agent_id: int, groups: list[str], sync: str) -> None:
    if not groups:
        groups = [DEFAULT_GROUP]
    cur.execute("DELETE FROM belongs WHERE id_agent = %s", (agent_id,))
    cur.executemany(
        "INSERT INTO belongs (id_agent, id_group, priority) VALUES (%s, %s, %s)",
        [(agent_id, group_id_of(cur, name), priority) for priority, name in enumerate(groups)],
    )
    cur.execute(
        'UPDATE agent SET "group" = %s, group_hash = %s, group_sync_status = %s WHERE id = %s',
        (",".join(groups), group_hash(groups), sync, agent_id),
    )


def change_groups(cur: psycopg.Cursor[Any], change: GroupChange) -> None:
    if change.kind is GroupChangeKind.CREATE:
        group_id_of(cur, change.groups[0])
    elif change.kind is GroupChangeKind.DELETE:
        name = change.groups[0]
        members = [
            row[0]
            for row in cur.execute(
                f"SELECT b.id_agent FROM {MEMBERSHIP} WHERE g.name = %s", (name,)
            ).fetchall()
        ]
        cur.execute('DELETE FROM "group" WHERE name = %s', (name,))
        for agent_id in members:
            write_groups(cur, agent_id, agent_groups(cur, agent_id), "syncreq")
    elif cur.execute("SELECT 1 FROM agent WHERE id = %s", (change.agent_id,)).fetchone() is not None:
        groups = regrouped(
            agent_groups(cur, change.agent_id), list(dict.fromkeys(change.groups)), change.mode
        )
        if groups is not None:
            write_groups(cur, change.agent_id, groups, change.sync_status)
