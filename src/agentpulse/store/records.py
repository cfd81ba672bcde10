"""The record stream between remoted (and the sweeper, and the query socket) and the store.

Remoted says what happened to an agent; the store decides what that means for its status (`status.py`)
and writes it. Records are small and plain so that remoted can later run in other processes and send them
over a pipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentpulse.status import ConnectionStatus, Event, StatusCode
from agentpulse.wire.control import Keepalive


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    agent_id: int
    event: Event
    at: float  # wall-clock epoch seconds, as stored
    keepalive: Keepalive | None = None  # the parsed keep-alive body, for ALIVE from a keep-alive
    code: StatusCode = StatusCode.NONE  # for VERSION_REFUSED
    version: str | None = None  # for VERSION_REFUSED with code 1


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
