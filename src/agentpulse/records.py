"""The record contract between remoted (and the sweeper, and the query socket) and the store, below both.

Remoted says what happened to an agent (`StatusUpdate`); the store decides what that means for its status
(`status.py`), writes it and answers with `TransitionRow`s. Records are small and plain because remoted's
worker processes send them over a pipe; `RecordSink` and `RepeatSink` are the store as remoted sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agentpulse.status import ConnectionStatus, RowReason, StatusCode, Trigger
from agentpulse.wire.control import Keepalive

MANAGER_ID = 0  # agent 000 is the manager itself: never in client.keys, never swept


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    agent_id: int
    trigger: Trigger
    at: float  # wall-clock epoch seconds, as stored
    keepalive: Keepalive | None = None  # the parsed keep-alive body, for ALIVE from a keep-alive
    code: StatusCode = StatusCode.NONE  # for VERSION_REFUSED
    version: str | None = None  # for VERSION_REFUSED with code 1
    # seconds the deciding loop lagged when it declared the agent silent (TIMEOUT, CONNECTION_LOST); 0:
    # the manager was not overloaded (agentpulse.looplag)
    overload: float = 0.0


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One row of agent_status_history: what the NATS status event is built from, too."""

    agent_id: int
    seq: int
    from_status: ConnectionStatus
    to_status: ConnectionStatus
    code: StatusCode
    at: float
    last_keepalive: float | None
    reason: RowReason | None = None  # a registration or replacement row (else the code says why)
    overload: float = 0.0  # the manager's lag when it decided, for a disconnection under overload

    @property
    def reason_text(self) -> str:
        """Why, as the history row and the status event say it."""
        text = self.reason.value if self.reason is not None else self.code.reason
        if self.overload:
            text += f" (while the manager was overloaded: {self.overload:.1f} s behind)"
        return text


class RecordSink(Protocol):
    """Where remoted sends what happened: the store itself, or a pipe to it from a worker process."""

    def submit(self, update: StatusUpdate) -> object: ...

    def record_state(self, agent_id: int, state_json: str) -> None: ...

    def count_events(self, counts: dict[int, int]) -> None: ...


class RepeatSink(RecordSink, Protocol):
    """The store as the manager side of worker processes sees it: also the repeated keep-alives, whose
    texts cross the pipe once and are then sent by reference."""

    def submit_repeats(
        self, agent_ids: list[int], ats: list[float], keepalives: dict[int, Keepalive]
    ) -> None: ...
