"""What a database behind the store implements, and the plain data it answers with.

The facade (`store/facade.py`) owns the status view, the batch and the writer thread; a backend owns the
database: its schema, the statements that turn a `Batch` into one transaction, reading the view back at
start, and maintenance. SQLite (`store/sqlite/`) is the embedded default, PostgreSQL (`store/postgresql/`) the
shared one. Every method runs on the writer thread, except `fragmentation`, which callers run in a thread, and
the agent-database ones, which run on the store's agent-database thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from agentpulse.records import TransitionRow
from agentpulse.store.batch import Batch, OutboxRow
from agentpulse.store.view import Adopted, LoadedAgent
from agentpulse.wire.keys import AgentKey

if TYPE_CHECKING:  # the reader answers with this module's data
    from agentpulse.store.reader import Reader


@dataclass(frozen=True, slots=True)
class Fragmentation:
    fragmentation: int  # 0-100
    free_pages_percentage: int  # 0-100

    def as_json(self) -> dict[str, int]:
        return {"fragmentation": self.fragmentation, "free_pages_percentage": self.free_pages_percentage}


class StoreError(Exception):
    """The database failed, whichever it is: callers catch this, never a driver's own exception."""


class WriteFailed(StoreError):
    """A batch could not be committed (full disk, locked file...); it was rolled back and will be retried."""


class Backend(Protocol):
    def open(self, now: float) -> None:
        """Create the database if it is missing, then connect (writer thread)."""

    def close(self) -> None: ...

    def insert_missing(self, agents: list[AgentKey], now: float) -> list[int]:
        """Agents of client.keys that the database lacks, inserted never connected; returns their ids."""

    def load(self) -> tuple[list[LoadedAgent], dict[int, int]]:
        """Every agent but the manager, and the last history sequence of every agent that has history."""

    def write(self, batch: Batch, now: float) -> None:
        """One transaction; raises WriteFailed after rolling back."""

    def prepare_agent_dbs(self) -> None:
        """Called once on the agent-database thread before the first `create_agent_db`."""

    def create_agent_db(self, agent_id: int) -> None:
        """The per-agent database of an agent's first startup (its own thread: it is slow)."""

    def remove_agent_files(self, agent_id: int) -> None: ...

    def vacuum(self, now: float) -> int:
        """Compact the global database; returns the fragmentation after it."""

    def vacuum_agent_db(self, agent_id: int) -> int: ...

    def fragmentation(self, agent_id: int | None = None) -> Fragmentation:
        """Measured read-only, on the global database or one agent's."""

    def reader(self, *, keep_open: bool = False) -> Reader:
        """Named reads on connections of their own, for any thread but the writer's."""

    def set_node_epoch(self, epoch: int) -> None:
        """This node's lease epoch, recorded beside the agents it holds (a no-op for one node on SQLite)."""

    def wants_idle_flush(self) -> bool:
        """True: `write` is called with an empty batch too, every flush interval (PostgreSQL with several
        nodes commits its flush mark even when idle)."""

    def take_adopted(self) -> list[Adopted]:
        """What the last `write` found of agents another node holds (their loss here was not written), and
        forgets it; empty on a backend with one node."""

    def set_outbox_encoder(self, encoder: Callable[[TransitionRow], OutboxRow] | None) -> None:
        """How a transition becomes its outbox row, for a backend that numbers history itself (PostgreSQL:
        the database decides each agent's sequence, so a renumbered row is encoded again)."""
