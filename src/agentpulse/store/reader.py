"""`Reader`: every read of the store's database made outside the writer, as named operations returning plain
data. `SqliteReader` (`store/sqlite/reads.py`) and `PostgresReader` (`store/postgresql/reads.py`) implement
it; the query socket, the CLIs and the events' outbox relay see only this protocol.

The danger is a driver's exception leaking to a caller that knows one database only: every implementation
raises `ReadFailed` (or, for `sql`, `SqlRefused`/`AnswerTooLarge`) and nothing driver-specific.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agentpulse.store.backend import Fragmentation, StoreError

if TYPE_CHECKING:
    from agentpulse.store import agentquery as aq

Row = dict[str, Any]  # a row as wdb_exec_stmt() gives it: columns in order, NULL columns left out
NO_LIMIT = -1
# what the per-group counts count, the only column names a reader puts into their SQL
GroupCountColumn = Literal["group_config_status", "connection_status"]
# sync_status of an agent of which only these columns wait for the cluster; any other, the whole row
PARTIAL_SYNCS = ("syncreq_keepalive", "syncreq_status")


class ReadFailed(StoreError):
    """The database could not be read (unreachable, missing, locked too long)."""


class SqlRefused(Exception):
    """The ad-hoc statement failed or was refused; the message is the database's (or names the time limit)."""


class AnswerTooLarge(Exception):
    """The rows passed `max_bytes` of JSON."""


@dataclass(frozen=True, slots=True)
class UnsyncedAgent:
    """An agent row the cluster has not had yet; `labels` unless only part of it waits (PARTIAL_SYNCS)."""

    row: Row
    labels: list[Row] | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One row of agent_status_history with the agent's name (None once the agent is gone)."""

    agent_id: int
    name: str | None
    from_status: str
    to_status: str
    status_code: int
    at: float


@dataclass(frozen=True, slots=True)
class OutboxRow:
    row_id: int
    subject: str
    msg_id: str
    payload: bytes


class Reader(Protocol):
    """Read-only operations on the global database and the per-agent data."""

    def close(self) -> None:
        """Close the connection this thread kept, if any."""

    def exists(self) -> bool:
        """Whether a manager ever created the database (the CLIs answer 'no data' when not)."""

    # -- agents
    def agent(self, agent_id: int) -> Row | None: ...
    def labels(self, agent_id: int) -> list[Row]: ...
    def agent_ids(
        self, after_id: int, limit: int = NO_LIMIT, *, status: str | None = None, node: str | None = None
    ) -> list[int]: ...
    def find_agent(self, name: str, ip: str) -> list[int]: ...
    def statuses(self) -> dict[int, str]: ...
    def names(self) -> dict[int, str]: ...
    def unsynced_agents(self, after_id: int, limit: int = NO_LIMIT) -> list[UnsyncedAgent]: ...

    # -- groups
    def group_names(self) -> list[str | None]: ...
    def group_id(self, name: str) -> int | None: ...
    def group_members(
        self, name: str, after_id: int | None = None, limit: int = NO_LIMIT
    ) -> list[int] | None: ...
    def agent_groups(self, agent_id: int) -> list[str]: ...
    def group_sets(self) -> list[tuple[str, str | None]]: ...
    def group_status_counts(self) -> dict[str, dict[str, int]]: ...
    def agent_group_lists(self) -> list[tuple[int, str | None, str]]:
        """(id, `group` CSV, group_config_status) of every agent but the manager: the rollout's start."""

    def group_config_counts(self) -> dict[str, dict[str, int]]:
        """group name -> group_config_status -> members (`agentpulse status`, `group status`)."""

    # -- the HTTP API (store/agentquery.py; written once for both backends in store/agentsql.py)
    def agents_page(self, query: aq.AgentQuery) -> aq.AgentPage: ...
    def agents_json(self, query: aq.AgentQuery, outputs: tuple[aq.Output, ...]) -> aq.JsonPage: ...
    def existing_ids(self, ids: list[int]) -> set[int]: ...
    def history(self, agent_id: int, limit: int) -> list[aq.StatusChange]: ...
    def changes_by_minute(self, since: float) -> list[tuple[int, str, str, int, int]]: ...
    def config_counts(self) -> dict[str, int]: ...
    def group_counts(self) -> dict[str, int]: ...

    # -- statuses
    def status_counts(self) -> dict[str, int]: ...
    def recent_changes(self, limit: int) -> list[HistoryEntry]: ...

    # -- the events' outbox
    def outbox_after(self, after: int, limit: int) -> list[OutboxRow]: ...
    def outbox_count(self, after: int) -> int: ...

    # -- per-agent data, upkeep and ad-hoc SQL
    def has_agent_db(self, agent_id: int) -> bool: ...
    def fim_scan(self, agent_id: int) -> tuple[int | None, int | None]: ...
    def fragmentation(self, agent_id: int | None = None) -> Fragmentation: ...
    def sql(self, statement: str, *, time_limit: float, max_bytes: int) -> list[Row]:
        """One client statement, read-only, in the backend's own SQL dialect."""
