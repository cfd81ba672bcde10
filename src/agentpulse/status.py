"""The connection-status model: states, status codes and which event moves an agent where (docs/operations.md).

Pure: no clock, no I/O. The store applies `transition()` to its in-memory view of each agent, so the same
rules hold whether the event came from remoted, the sweeper or the query socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ConnectionStatus(enum.StrEnum):
    NEVER_CONNECTED = "never_connected"
    PENDING = "pending"
    ACTIVE = "active"
    DISCONNECTED = "disconnected"

    @property
    def words(self) -> str:
        """The word agent_control prints."""
        return _WORDS[self]


_WORDS = {
    ConnectionStatus.NEVER_CONNECTED: "Never connected",
    ConnectionStatus.PENDING: "Pending",
    ConnectionStatus.ACTIVE: "Active",
    ConnectionStatus.DISCONNECTED: "Disconnected",
}


class StatusCode(enum.IntEnum):
    """Wazuh's agent_status_code_t (0-5) plus agentpulse's 6."""

    NONE = 0
    INVALID_VERSION = 1
    VERSION_NOT_RECEIVED = 2
    SHUTDOWN_RECEIVED = 3
    NO_KEEPALIVE = 4
    RESET_BY_MANAGER = 5
    CONNECTION_LOST = 6

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {
    StatusCode.NONE: "none",
    StatusCode.INVALID_VERSION: "agent version newer than the manager's",
    StatusCode.VERSION_NOT_RECEIVED: "agent version not received",
    StatusCode.SHUTDOWN_RECEIVED: "shutdown message received",
    StatusCode.NO_KEEPALIVE: "no keep-alive within the timeout",
    StatusCode.RESET_BY_MANAGER: "reset by manager start",
    StatusCode.CONNECTION_LOST: "connection lost and not re-opened within the grace time",
}


class Trigger(enum.Enum):
    """What happened to an agent, as remoted, the sweeper and the manager report it: the input of `transition()`."""

    STARTUP = "startup"  # startup accepted
    VERSION_REFUSED = "version_refused"  # startup refused: code 1 or 2, status unchanged
    ALIVE = "alive"  # keep-alive or any other valid message after startup
    SHUTDOWN = "shutdown"
    CONNECTION_LOST = "connection_lost"  # socket closed, grace expired
    TIMEOUT = "timeout"  # silent for the manager keep-alive timeout, or swept
    MANAGER_RESET = "manager_reset"


class RowReason(enum.StrEnum):
    """Why a history row the status model did not produce exists: the `reason` of its status event.

    A registration starts an enrolled agent's history; a replacement is the removal row (`-> disconnected`,
    code 0) of an agent an enrolment replaced. Other removals keep the reason of their code.
    """

    REGISTERED = "registered"
    REPLACED = "replaced by a new enrolment"


@dataclass(frozen=True, slots=True)
class Transition:
    new: ConnectionStatus
    code: StatusCode


LIVE = (ConnectionStatus.PENDING, ConnectionStatus.ACTIVE)  # connected, or about to be


def transition(
    current: ConnectionStatus, trigger: Trigger, code: StatusCode = StatusCode.NONE
) -> Transition | None:
    """The status an event moves an agent to, or None when the event changes nothing.

    `code` is only read for VERSION_REFUSED (1 or 2). A refusal keeps the status and only sets the code, so
    it comes back as a Transition to the same status.
    """
    match trigger:
        case Trigger.STARTUP:
            return Transition(ConnectionStatus.PENDING, StatusCode.NONE)
        case Trigger.VERSION_REFUSED:
            return Transition(current, code)
        case Trigger.ALIVE:
            # From never_connected too: a UDP agent keeps sending keep-alives across a manager restart
            # without a new startup.
            if current is ConnectionStatus.ACTIVE:
                return None
            return Transition(ConnectionStatus.ACTIVE, StatusCode.NONE)
        case Trigger.SHUTDOWN:
            if current is ConnectionStatus.DISCONNECTED:
                return None
            return Transition(ConnectionStatus.DISCONNECTED, StatusCode.SHUTDOWN_RECEIVED)
        case Trigger.CONNECTION_LOST:
            return _disconnect_live(current, StatusCode.CONNECTION_LOST)
        case Trigger.TIMEOUT:
            return _disconnect_live(current, StatusCode.NO_KEEPALIVE)
        case Trigger.MANAGER_RESET:
            return _disconnect_live(current, StatusCode.RESET_BY_MANAGER)
    raise AssertionError(trigger)  # pragma: no cover


def _disconnect_live(current: ConnectionStatus, code: StatusCode) -> Transition | None:
    if current in LIVE:
        return Transition(ConnectionStatus.DISCONNECTED, code)
    return None
