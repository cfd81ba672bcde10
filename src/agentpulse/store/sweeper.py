"""The disconnection sweeper and the disconnection alerts.

Every second, live agents silent for `agents_disconnection_time` go disconnected (code 4), measured on the
monotonic clock so a jump of the wall clock disconnects nobody. An agent that went away unexpectedly and
is still disconnected `agents_disconnection_alert_time` later raises Wazuh's "Agent disconnected" line.
While the manager is overloaded (its loops or the record pipe behind) the timeout is stretched by that lag,
and a disconnection that still happens says so in its history row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentpulse.looplag import overload_of
from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode, Trigger
from agentpulse.store.facade import Store
from agentpulse.store.subscriber import Subscriber

log = logging.getLogger(__name__)

ALERTED_CODES = (StatusCode.NO_KEEPALIVE, StatusCode.CONNECTION_LOST)


class Sweeper:
    """`sweep()` once a second: the silent go disconnected, due alerts are raised.

    The sweep covers UDP agents and anything the keep-alive scheduler did not see. Silence is measured on
    the monotonic clock (the time the store last heard from the agent), so a jump of the wall clock never
    disconnects anyone; Wazuh sweeps once per timeout, so it detects between T and 2T, this sweep between
    T and T + 1 s. The store keeps its agents in the order it last heard from them, so a sweep reads the
    silent ones and one more, not all.

    An agent that went away unexpectedly (codes 4 and 6) and is still disconnected
    `agents_disconnection_alert_time` later raises Wazuh's "Agent disconnected" line, and its history row
    is marked alerted.
    """

    def __init__(
        self,
        store: Store,
        timeout: float,
        alert_time: float = 0.0,
        allowance: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.alert_time = alert_time
        # Seconds the manager is behind (its loop, the workers' loops, the record pipe): what it could not
        # read in that time is not the agents' silence.
        self.allowance = allowance
        self._alerts: dict[int, tuple[int, float]] = {}  # agent -> (history seq, monotonic due time)
        self.runs = 0  # sweeps since start (metrics)
        self.disconnected = 0  # agents it marked disconnected since start
        store.subscribe(Subscriber(on_transition=self._on_transition))

    def _on_transition(self, row: TransitionRow) -> None:
        if row.to_status is ConnectionStatus.DISCONNECTED and row.code in ALERTED_CODES:
            self._alerts[row.agent_id] = (row.seq, self.store.monotonic() + self.alert_time)
        else:
            self._alerts.pop(row.agent_id, None)

    def sweep(self) -> list[int]:
        now_monotonic = self.store.monotonic()
        behind = self.allowance() if self.allowance is not None else 0.0
        threshold = now_monotonic - self.timeout - behind
        stale = self.store.view.silent_since(threshold)
        now = self.store.clock()
        overload = overload_of(behind)
        for agent_id in stale:
            self.store.submit(StatusUpdate(agent_id, Trigger.TIMEOUT, now, overload=overload))
        self.runs += 1
        self.disconnected += len(stale)
        if stale:
            log.info(
                "Sweeper: %d agents silent for %.0f s marked disconnected%s",
                len(stale),
                self.timeout + behind,
                f" (the manager {behind:.1f} s behind)" if overload else "",
            )
        self._raise_alerts(now_monotonic)
        return stale

    def _raise_alerts(self, now_monotonic: float) -> None:
        due = [agent_id for agent_id, (_, at) in self._alerts.items() if at <= now_monotonic]
        for agent_id in due:
            seq, _ = self._alerts.pop(agent_id)
            view = self.store.agents.get(agent_id)
            # Not an agent another node took meanwhile (the view adopted the database's status).
            if view is None or view.seq != seq or view.status is not ConnectionStatus.DISCONNECTED:
                continue
            log.warning("Agent disconnected: '%s-%s'.", view.name, view.register_ip)
            self.store.mark_alerted(agent_id, seq)
