"""The disconnection sweeper: every second, live agents silent for `agents_disconnection_time` go
disconnected (code 4). It covers UDP agents and anything the keep-alive scheduler did not see.

Silence is measured on the monotonic clock (the time the store last heard from the agent), so a jump of the
wall clock never disconnects anyone; Wazuh sweeps once per timeout, so it detects between T and 2T.
"""

from __future__ import annotations

import logging

from agentpulse.status import Event
from agentpulse.store.records import StatusUpdate
from agentpulse.store.writer import Store

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, store: Store, timeout: float) -> None:
        self.store = store
        self.timeout = timeout

    def sweep(self) -> list[int]:
        threshold = self.store.monotonic() - self.timeout
        stale = [agent_id for agent_id, view in self.store.live_agents() if view.seen_monotonic < threshold]
        now = self.store.clock()
        for agent_id in stale:
            self.store.submit(StatusUpdate(agent_id, Event.TIMEOUT, now))
        if stale:
            log.info("Sweeper: %d agents silent for %.0f s marked disconnected", len(stale), self.timeout)
        return stale
