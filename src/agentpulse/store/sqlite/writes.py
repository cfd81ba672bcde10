"""Every write to global.db: one accepted `Batch` becomes the statements of one transaction.

Runs on the writer thread only. It keeps what global.db already holds of each agent's keep-alive and labels
(`store/written.py`), since most keep-alives repeat the last one: then only `last_keepalive` moves, and it
moves with one statement per second of arrival instead of one per agent (sqlite3 lets go of the GIL once per
statement, and the event loop may then keep it for a whole switch interval).
"""

from __future__ import annotations

import json
import sqlite3

from agentpulse.store.batch import (
    Batch,
    ColumnUpdate,
    GroupChange,
    GroupChangeKind,
    InsertedAgent,
    StatusColumns,
    stored_labels,
)
from agentpulse.store.groups import DEFAULT_GROUP, group_hash, regrouped
from agentpulse.store.sqlite import schema
from agentpulse.store.written import WrittenKeepalives
from agentpulse.wire.control import Keepalive
from agentpulse.wire.keys import AgentKey

MEMBERS_OF_GROUP = f"SELECT b.id_agent FROM {schema.MEMBERSHIP} WHERE g.name = ?"
GROUPS_OF_AGENT = f"SELECT g.name FROM {schema.MEMBERSHIP} WHERE b.id_agent = ? ORDER BY b.priority"
_UPDATE_KEEPALIVE = (
    "UPDATE agent SET version = ?, config_sum = ?, merged_sum = ?, manager_host = ?, "
    "node_name = ?, ip = COALESCE(?, ip), os_uname = ?, os_name = ?, os_platform = ?, "
    "os_version = ?, os_codename = ?, os_major = ?, os_minor = ?, os_arch = ?, "
    "last_keepalive = ?, sync_status = 'synced' WHERE id = ?"
)


_UPDATE_STATUS = (
    "UPDATE agent SET connection_status = ?, status_code = ?, "
    "disconnection_time = CASE WHEN ? = 'disconnected' THEN ? ELSE 0 END, "
    "version = COALESCE(?, version) WHERE "
)
GROUPED_FROM = 16  # agents sharing a change's values, from which they take one statement


def _ids(agent_ids: list[int]) -> str:
    return "[" + ",".join(map(str, agent_ids)) + "]"


def _pairs(pairs: list[tuple[int, int]]) -> str:
    return "[" + ",".join(f"[{a},{b}]" for a, b in pairs) + "]"


class SqliteWrites:
    def __init__(self, manager_host: str, node_name: str) -> None:
        self.manager_host = manager_host
        self.node_name = node_name
        self.written = WrittenKeepalives(manager_host, node_name)

    def rolled_back(self, batch: Batch) -> None:
        """What `write` thought it wrote for these agents was rolled back."""
        self.written.rolled_back(batch)

    def write(self, db: sqlite3.Connection, batch: Batch, now: float) -> None:
        # Deletions first, then insertions: an id removed and added again within one batch ends up added.
        reinserted = {a.number for a in batch.new_agents} | set(batch.inserted)
        if batch.deleted:
            gone = [(agent_id,) for agent_id in batch.deleted]
            db.executemany("DELETE FROM agent WHERE id = ?", gone)  # labels and belongs cascade
            db.executemany("DELETE FROM agent_runtime WHERE agent_id = ?", gone)
            for agent_id in batch.deleted:
                self.written.forget(agent_id)
        if batch.new_agents:
            insert_agents(db, batch.new_agents, int(now))
        if batch.inserted:
            self._insert_rows(db, list(batch.inserted.values()))
        self._write_keepalives(db, batch)
        self._write_statuses(db, batch, batch.deleted.keys() - reinserted)
        self._write_outbox(db, batch, now)
        self._write_runtime(db, batch)
        for change in batch.group_changes:
            change_groups(db, change)
        for update in batch.column_updates:
            self._update_columns(db, update)
        if batch.config_statuses:
            db.executemany(
                "UPDATE agent SET group_config_status = ? WHERE id = ?",
                [(value, agent_id) for agent_id, value in batch.config_statuses.items()],
            )
        if batch.sync_statuses:
            # wdb_global_validate_sync_status(): never downgrade what the cluster still has to send.
            db.executemany(
                "UPDATE agent SET sync_status = CASE "
                "WHEN sync_status = 'syncreq' AND ?1 NOT IN ('synced', 'syncreq') THEN sync_status "
                "WHEN sync_status = 'syncreq_status' AND ?1 = 'syncreq_keepalive' THEN sync_status "
                "ELSE ?1 END WHERE id = ?2",
                [(value, agent_id) for agent_id, value in batch.sync_statuses.items()],
            )

    def _write_keepalives(self, db: sqlite3.Connection, batch: Batch) -> None:
        writes = self.written.sort(batch)
        if writes.data_rows:
            db.executemany(_UPDATE_KEEPALIVE, writes.data_rows)
        for second, agent_ids in writes.touched.items():
            db.execute(
                "UPDATE agent SET last_keepalive = ? WHERE id IN (SELECT value FROM json_each(?))",
                (second, json.dumps(agent_ids)),
            )
        for agent_id, keepalive in writes.label_agents:
            self._write_labels(db, agent_id, keepalive)

    @staticmethod
    def _write_statuses(db: sqlite3.Connection, batch: Batch, removed: set[int]) -> None:
        """Status columns, history rows and each agent's last sequence. Agents that share the values of a
        change (a start's code-5 reset: every agent of the last run at one instant) take one statement per
        group, their ids as a JSON array, instead of one per agent: 50,000 rows commit 3-5x faster so. Only
        integers and names of statuses go through JSON; times are bound as they are."""
        groups: dict[StatusColumns, list[int]] = {}
        for agent_id, columns in batch.statuses.items():
            groups.setdefault(columns, []).append(agent_id)
        singles: list[tuple[object, ...]] = []
        for (status, code, at, version), agent_ids in groups.items():
            values = (status.value, int(code), status.value, int(at or 0), version)
            if len(agent_ids) < GROUPED_FROM:
                singles.extend((*values, agent_id) for agent_id in agent_ids)
                continue
            db.execute(_UPDATE_STATUS + "id IN (SELECT value FROM json_each(?))", (*values, _ids(agent_ids)))
        if singles:
            db.executemany(_UPDATE_STATUS + "id = ?", singles)
        if not batch.history:
            return
        events: dict[tuple[str, str, int, float, str | None], list[tuple[int, int]]] = {}
        for r in batch.history:
            shared = (
                r.from_status.value,
                r.to_status.value,
                int(r.code),
                r.at,
                r.reason_text if r.overload else None,
            )
            events.setdefault(shared, []).append((r.agent_id, r.seq))
        rows: list[tuple[object, ...]] = []
        for shared, pairs in events.items():
            if len(pairs) < GROUPED_FROM:
                rows.extend((agent_id, seq, *shared) for agent_id, seq in pairs)
                continue
            db.execute(
                "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at, "
                "reason) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?, ?, ?, ?, ? "
                "FROM json_each(?)",
                (*shared, _pairs(pairs)),
            )
        if rows:
            db.executemany(
                "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at, "
                "reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        last_seqs = {r.agent_id: r.seq for r in batch.history if r.agent_id not in removed}
        # WHERE true: an upsert's SELECT would otherwise read ON CONFLICT as a join's ON
        db.execute(
            "INSERT INTO agent_runtime (agent_id, status_seq) SELECT json_extract(value, '$[0]'), "
            "json_extract(value, '$[1]') FROM json_each(?) WHERE true "
            "ON CONFLICT(agent_id) DO UPDATE SET status_seq = excluded.status_seq",
            (_pairs(list(last_seqs.items())),),
        )

    @staticmethod
    def _write_outbox(db: sqlite3.Connection, batch: Batch, now: float) -> None:
        if batch.outbox:
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

    @staticmethod
    def _write_runtime(db: sqlite3.Connection, batch: Batch) -> None:
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

    @staticmethod
    def _insert_rows(db: sqlite3.Connection, agents: list[InsertedAgent]) -> None:
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
                write_groups(db, agent.id, list(agent.groups), "synced")

    def _update_columns(self, db: sqlite3.Connection, update: ColumnUpdate) -> None:
        names = [name for name in update.columns if name in schema.AGENT_COLUMNS]  # identifiers: known only
        self.written.forget_columns(update.agent_id)
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
            self.written.forget_labels(update.agent_id)

    def _write_labels(self, db: sqlite3.Connection, agent_id: int, keepalive: Keepalive) -> None:
        """Rewrite the labels table for one agent: its own labels plus the system labels Wazuh adds."""
        labels = stored_labels(keepalive, self.manager_host, self.node_name)
        db.execute("DELETE FROM labels WHERE id = ?", (agent_id,))
        db.executemany(
            "INSERT INTO labels (id, key, value) VALUES (?, ?, ?)",
            [(agent_id, key, value) for key, value in labels.items()],
        )


def insert_agents(db: sqlite3.Connection, agents: list[AgentKey], now: int) -> None:
    """Agents of client.keys, never connected, in the default group (ids already there are left alone)."""
    db.executemany(
        "INSERT OR IGNORE INTO agent (id, name, register_ip, internal_key, date_add, group_hash) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(a.number, a.name, a.ip.text, a.key, now, group_hash([DEFAULT_GROUP])) for a in agents],
    )
    group_id = group_id_of(db, DEFAULT_GROUP)
    db.executemany(
        "INSERT OR IGNORE INTO belongs (id_agent, id_group, priority) VALUES (?, ?, 0)",
        [(a.number, group_id) for a in agents],
    )


def group_id_of(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT id FROM `group` WHERE name = ?", (name,)).fetchone()
    if row is None:  # not INSERT OR IGNORE: an ignored insert still uses up an AUTOINCREMENT id
        return int(db.execute("INSERT INTO `group` (name) VALUES (?)", (name,)).lastrowid or 0)
    return int(row[0])


def agent_groups(db: sqlite3.Connection, agent_id: int) -> list[str]:
    return [row[0] for row in db.execute(GROUPS_OF_AGENT, (agent_id,))]


def write_groups(db: sqlite3.Connection, agent_id: int, groups: list[str], sync: str) -> None:
    """Give an agent exactly these groups, in this priority order, and the matching agent columns."""
    if not groups:
        groups = [DEFAULT_GROUP]
    db.execute("DELETE FROM belongs WHERE id_agent = ?", (agent_id,))
    db.executemany(
        "INSERT INTO belongs (id_agent, id_group, priority) VALUES (?, ?, ?)",
        [(agent_id, group_id_of(db, name), priority) for priority, name in enumerate(groups)],
    )
    db.execute(
        "UPDATE agent SET `group` = ?, group_hash = ?, group_sync_status = ? WHERE id = ?",
        (",".join(groups), group_hash(groups), sync, agent_id),
    )


def change_groups(db: sqlite3.Connection, change: GroupChange) -> None:
    if change.kind is GroupChangeKind.CREATE:
        group_id_of(db, change.groups[0])
    elif change.kind is GroupChangeKind.DELETE:
        name = change.groups[0]
        members = [row[0] for row in db.execute(MEMBERS_OF_GROUP, (name,))]
        db.execute("DELETE FROM `group` WHERE name = ?", (name,))  # its belongs rows cascade
        for agent_id in members:
            write_groups(db, agent_id, agent_groups(db, agent_id), "syncreq")
    elif db.execute("SELECT 1 FROM agent WHERE id = ?", (change.agent_id,)).fetchone() is not None:
        groups = regrouped(agent_groups(db, change.agent_id), list(dict.fromkeys(change.groups)), change.mode)
        if groups is not None:
            write_groups(db, change.agent_id, groups, change.sync_status)
