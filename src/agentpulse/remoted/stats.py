"""What one remoted counts (messages by kind, refusals by reason, replies dropped) and how the counts reach
the manager: a `WorkerStats` snapshot, sent by each worker once a second (`Tag.STATS`), never per message.

The danger is the hot path: a keep-alive costs one dict increment here (`RemotedStats.messages`), nothing
more, and nothing is sent because of it. Counts are cumulative for the life of a process; the manager
folds a dead worker's last snapshot into its successor's (`WorkerTotals`), so a counter never goes back.
"""

from __future__ import annotations

import typing
from collections import Counter
from dataclasses import dataclass, field

from agentpulse.wire import control
from agentpulse.wire.errors import Reason

PING_KIND = "ping"
# The label of each message class `control.parse_from_agent` returns; a class not named here is "other".
MESSAGE_KINDS: dict[type, str] = {
    control.Keepalive: "keepalive",
    control.AgentEvent: "event",
    control.Startup: "startup",
    control.Shutdown: "shutdown",
    control.RequestReply: "request_reply",
}
KEEPALIVE_KIND = MESSAGE_KINDS[control.Keepalive]
OTHER_KIND = "other"
# Closes decided before authentication (`remoted/admission.py`), beside the WireError reasons.
ADMISSION_REFUSED = "connection_limit"
ADMISSION_EVICTED = "evicted"
ADMISSION_TIMED_OUT = "frame_timeout"
UNEXPECTED = "unexpected_error"  # an exception at the frame boundary (`remoted/faults.py`)


def reason_label(reason: Reason) -> str:
    """`Reason.WRONG_KEY` -> `wrong_key`: a closed set, fit for a label."""
    return reason.name.lower()


def _every_message() -> dict[type | str, int]:
    """A zero for every class `parse_from_agent` can return, and for pings: a plain dict with every key
    present increments at half the cost of a Counter (a Python subclass) on the hot path."""
    return dict.fromkeys([*typing.get_args(control.FromAgent), PING_KIND], 0)


@dataclass(slots=True)
class RemotedStats:
    """The counters one `Remoted` keeps: `messages` by message class (a type key costs nothing to compute
    on the hot path; `snapshot()` names it), `refusals` by `Reason`, replies dropped on a full socket."""

    messages: dict[type | str, int] = field(default_factory=_every_message)
    refusals: Counter[Reason] = field(default_factory=Counter)
    replies_dropped: int = 0


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One remoted's figures at one moment, as the pipe carries them (plain values: it pickles small)."""

    connections: int = 0  # TCP connections open, authenticated or not
    messages: dict[str, int] = field(default_factory=dict)  # by kind
    refusals: dict[str, int] = field(default_factory=dict)  # by reason
    replies_dropped: int = 0

    @property
    def keepalives(self) -> int:
        return self.messages.get(KEEPALIVE_KIND, 0)

    def plus(self, other: WorkerStats) -> WorkerStats:
        """Counters added; `connections` is a level, not a count: `other`'s (the newer) is kept."""
        return WorkerStats(
            other.connections,
            _added(self.messages, other.messages),
            _added(self.refusals, other.refusals),
            self.replies_dropped + other.replies_dropped,
        )


def _added(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
    total = dict(first)
    for name, count in second.items():
        total[name] = total.get(name, 0) + count
    return total


def snapshot(
    stats: RemotedStats,
    connections: int,
    *,
    admission_refused: int = 0,
    admission_evicted: int = 0,
    admission_timed_out: int = 0,
    unexpected: int = 0,
) -> WorkerStats:
    """The figures of one remoted now, its admission's and fault log's counts as refusal reasons."""
    messages: dict[str, int] = {}
    for key, count in stats.messages.items():
        if not count:
            continue
        kind = key if isinstance(key, str) else MESSAGE_KINDS.get(key, OTHER_KIND)
        messages[kind] = messages.get(kind, 0) + count
    refusals = {reason_label(reason): count for reason, count in stats.refusals.items()}
    for label, count in (
        (ADMISSION_REFUSED, admission_refused),
        (ADMISSION_EVICTED, admission_evicted),
        (ADMISSION_TIMED_OUT, admission_timed_out),
        (UNEXPECTED, unexpected),
    ):
        if count:
            refusals[label] = refusals.get(label, 0) + count
    return WorkerStats(connections, messages, refusals, stats.replies_dropped)


@dataclass(slots=True)
class WorkerTotals:
    """The manager's view of one worker slot across restarts: what earlier processes counted (`before`)
    and the current process's last snapshot (`current`)."""

    before: WorkerStats = field(default_factory=WorkerStats)
    current: WorkerStats = field(default_factory=WorkerStats)

    def update(self, stats: WorkerStats) -> None:
        self.current = stats

    def restarted(self) -> None:
        """The process died: its last counts become history, its connections are gone."""
        self.before = self.before.plus(self.current)
        self.before = WorkerStats(0, self.before.messages, self.before.refusals, self.before.replies_dropped)
        self.current = WorkerStats()

    @property
    def total(self) -> WorkerStats:
        return self.before.plus(self.current)
