"""The disconnection sweeper and the disconnection alerts.

Every second, live agents silent for `agents_disconnection_time` go disconnected (code 4), measured on the
monotonic clock so a jump of the wall clock disconnects nobody. An agent that went away unexpectedly and
is still disconnected `agents_disconnection_alert_time` later raises Wazuh's "Agent disconnected" line.
"""

from __future__ import annotations

import logging

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

    def __init__(self, store: Store, timeout: float, alert_time: float = 0.0) -> None:
        self.store = store
        self.timeout = timeout
        self.alert_time = alert_time
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
        threshold = now_monotonic - self.timeout
        stale = self.store.view.silent_since(threshold)
        now = self.store.clock()
        for agent_id in stale:
            self.store.submit(StatusUpdate(agent_id, Trigger.TIMEOUT, now))
        self.runs += 1
        self.disconnected += len(stale)
        if stale:
            log.info("Sweeper: %d agents silent for %.0f s marked disconnected", len(stale), self.timeout)
        self._raise_alerts(now_monotonic)
        return stale

    def _raise_alerts(self, now_monotonic: float) -> None:
        due = [agent_id for agent_id, (_, at) in self._alerts.items() if at <= now_monotonic]
        for agent_id in due:
            seq, _ = self._alerts.pop(agent_id)
            view = self.store.agents.get(agent_id)
            if view is None or view.seq != seq:
                continue
            log.warning("Agent disconnected: '%s-%s'.", view.name, view.register_ip)
            self.store.mark_alerted(agent_id, seq)
