"""How other components hear from the store: one `Subscriber` with the callbacks it wants.

None of them runs under the store's lock. Transitions and keep-alives are told on the event loop as they are
accepted; committed outbox rows are told on the writer thread once they are in the database. At most one
subscriber encodes the outbox: the status event of each transition, written in the same transaction as the
change, so a crash can lose neither without the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agentpulse.records import TransitionRow
from agentpulse.store.batch import OutboxRow
from agentpulse.wire.control import Keepalive

TransitionListener = Callable[[TransitionRow], None]
KeepaliveListener = Callable[[int, float, Keepalive], None]  # agent id, epoch seconds, the keep-alive
ConfigListener = Callable[[int, str, float], None]  # agent id, its new group_config_status, epoch seconds
OutboxEncoder = Callable[[TransitionRow], OutboxRow]


@dataclass(frozen=True, slots=True, eq=False)
class Subscriber:
    on_transition: TransitionListener | None = None
    on_keepalive: KeepaliveListener | None = None
    on_outbox_committed: Callable[[int], None] | None = None  # how many outbox rows a commit held
    outbox_encoder: OutboxEncoder | None = None
    on_config_status: ConfigListener | None = None  # an agent's group_config_status changed
    on_groups_changed: Callable[[], None] | None = None  # groups or memberships changed (not yet committed)
