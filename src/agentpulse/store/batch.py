"""What the store has accepted and not yet written: one `Batch`, swapped out whole by the writer thread.

The batch is backend-neutral data: a backend turns it into one transaction. For keep-alives the latest per
agent wins; history and outbox rows keep their order. A batch that could not be written is merged back under
what arrived since (`requeue`), keeping the newer values, so a failed commit (a full disk) loses nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.wire.control import Keepalive
from agentpulse.wire.keys import AgentKey

OutboxRow = tuple[str, str, bytes]  # subject, Nats-Msg-Id, payload


class GroupChangeKind(enum.StrEnum):
    CREATE = "create"
    DELETE = "delete"
    SET = "set"


class GroupMode(enum.StrEnum):
    """Wazuh's set-agent-groups modes."""

    OVERRIDE = "override"
    APPEND = "append"
    EMPTY_ONLY = "empty_only"
    REMOVE = "remove"


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

    CREATE and DELETE name a group (`groups[0]`); SET gives an agent its groups by `mode`. Priorities stay
    dense (0, 1, ...) in the order given, `agent.group` is the comma-separated list in that order and
    `group_hash` its hash; an agent left with no group goes back to `default`, as Wazuh does.
    """

    kind: GroupChangeKind
    groups: tuple[str, ...]
    agent_id: int = 0
    mode: GroupMode = GroupMode.OVERRIDE
    sync_status: str = "synced"


@dataclass(frozen=True, slots=True)
class ColumnUpdate:
    """Descriptive columns of one agent from the cluster sync (`sync-agent-info-set`), labels optional."""

    agent_id: int
    columns: dict[str, Any]
    labels: tuple[tuple[str, str], ...] | None


StatusColumns = tuple[ConnectionStatus, StatusCode, float | None, str | None]  # status, code, at, version


@dataclass(slots=True)
class Batch:
    keepalives: dict[int, tuple[float, Keepalive | None]] = field(default_factory=dict)
    statuses: dict[int, StatusColumns] = field(default_factory=dict)
    history: list[TransitionRow] = field(default_factory=list)
    runtime_states: dict[int, tuple[str, float]] = field(default_factory=dict)
    event_counts: dict[int, int] = field(default_factory=dict)
    agent_dbs: set[int] = field(default_factory=set)
    new_agents: list[AgentKey] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    # The transition each outbox row was encoded from, in the same order: on PostgreSQL the database
    # decides each agent's sequence, and a row numbered again is encoded again (`add_event`).
    outbox_sources: list[TransitionRow] = field(default_factory=list)
    outbox_acked: list[int] = field(default_factory=list)
    alerted: list[tuple[int, int]] = field(default_factory=list)
    inserted: dict[int, InsertedAgent] = field(default_factory=dict)
    deleted: dict[int, bool] = field(default_factory=dict)  # agent -> also remove its files
    group_changes: list[GroupChange] = field(default_factory=list)
    column_updates: list[ColumnUpdate] = field(default_factory=list)
    sync_statuses: dict[int, str] = field(default_factory=dict)
    config_statuses: dict[int, str] = field(default_factory=dict)  # group_config_status changes
    # Several nodes: agents this node serves without a status change to carry its binding (it heard from
    # one its view had as another node's), True when it keeps an older live connection against a newer
    # one on another node (the cross-node overtake rule): the binding is written with the next flush.
    claims: dict[int, bool] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__slots__)

    def forget(self, agent_id: int, *, purge_files: bool) -> None:
        """The agent is removed: nothing pending for it is written, its deletion is."""
        for pending in (
            self.keepalives,
            self.statuses,
            self.runtime_states,
            self.event_counts,
            self.inserted,
            self.sync_statuses,
            self.config_statuses,
            self.claims,
        ):
            pending.pop(agent_id, None)
        self.agent_dbs.discard(agent_id)
        self.new_agents = [a for a in self.new_agents if a.number != agent_id]
        self.deleted[agent_id] = purge_files or self.deleted.get(agent_id, False)

    def add_event(self, row: TransitionRow, outbox: OutboxRow | None) -> None:
        """A transition's history row and, when events are on, its outbox row."""
        self.history.append(row)
        if outbox is not None:
            self.outbox.append(outbox)
            self.outbox_sources.append(row)

    def drop_oldest(self, keep: int) -> int:
        """Keep at most `keep` history plus outbox rows, the newest of each (half the cut from each list);
        returns how many were dropped. The status columns (one entry per agent) are never dropped."""
        excess = len(self.history) + len(self.outbox) - keep
        if excess <= 0:
            return 0
        from_history = min(len(self.history), max(excess - len(self.outbox), (excess + 1) // 2))
        from_outbox = excess - from_history
        del self.history[:from_history]
        del self.outbox[:from_outbox]
        del self.outbox_sources[: max(0, len(self.outbox_sources) - len(self.outbox))]  # the same rows
        return excess

    def requeue_under(self, newer: Batch) -> Batch:
        """This batch failed to commit: merge `newer` (what arrived since) over it, and return the result.

        Agents removed since: what this batch still held for them goes first (what `newer` holds for them
        arrived after a re-insertion, and stays).
        """
        for agent_id, purge in newer.deleted.items():
            self.forget(agent_id, purge_files=purge)
        self.keepalives.update(newer.keepalives)
        self.statuses.update(newer.statuses)
        self.history.extend(newer.history)
        self.runtime_states.update(newer.runtime_states)
        for agent_id, count in newer.event_counts.items():
            self.event_counts[agent_id] = self.event_counts.get(agent_id, 0) + count
        self.agent_dbs |= newer.agent_dbs
        self.new_agents.extend(newer.new_agents)
        self.outbox.extend(newer.outbox)
        self.outbox_sources.extend(newer.outbox_sources)
        self.outbox_acked.extend(newer.outbox_acked)
        self.alerted.extend(newer.alerted)
        self.inserted.update(newer.inserted)
        self.group_changes.extend(newer.group_changes)
        self.column_updates.extend(newer.column_updates)
        self.sync_statuses.update(newer.sync_statuses)
        self.config_statuses.update(newer.config_statuses)
        for agent_id, kept in newer.claims.items():
            self.claims[agent_id] = kept or self.claims.get(agent_id, False)
        return self


def stored_labels(keepalive: Keepalive, manager_host: str, node_name: str) -> dict[str, str]:
    """The `labels` rows of an agent: its own labels plus the system labels Wazuh adds."""
    labels = dict(keepalive.labels)
    labels['#"_manager_hostname"'] = manager_host
    labels['#"_node_name"'] = node_name
    if keepalive.agent_ip:
        labels['#"_agent_ip"'] = keepalive.agent_ip
    if keepalive.version:
        labels['#"_wazuh_version"'] = keepalive.version
    return labels
