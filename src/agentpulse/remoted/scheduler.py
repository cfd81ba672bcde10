"""The manager keep-alive: probe agents silent for `interval`, disconnect those silent for `timeout`.

One heap for every connection, not a timer per agent (see `KeepaliveScheduler.check`). Traffic costs
nothing here: a message only moves `last_received`, and the heap catches up lazily, about once per
interval per agent. The danger is blaming an agent for the manager's slowness: a loop that runs late reads
late, so the timeout is stretched by the loop's recent lag (`LoopLag.allowance`), and a connection with
bytes waiting unread in its socket is not silent, whatever its `last_received` says.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from typing import TYPE_CHECKING

from agentpulse.config import ManagerKeepalive
from agentpulse.looplag import LoopLag, overload_of
from agentpulse.records import StatusUpdate
from agentpulse.remoted.session import CloseReason, unread_bytes
from agentpulse.status import Trigger
from agentpulse.wire import control

if TYPE_CHECKING:
    from agentpulse.remoted.server import Remoted
    from agentpulse.remoted.session import Session

log = logging.getLogger(__name__)

UNREAD_RECHECK = 1.0  # seconds before a connection with unread bytes is looked at again


class KeepaliveScheduler:
    def __init__(
        self, remoted: Remoted, settings: ManagerKeepalive, tick: float = 0.2, lag: LoopLag | None = None
    ) -> None:
        self.remoted = remoted
        self.interval = settings.interval
        self.timeout = settings.timeout
        self.tick = min(tick, settings.interval / 4)
        self.lag = lag  # this loop's lag: the timeout is stretched by it
        self._heap: list[tuple[float, int, Session]] = []
        self._order = itertools.count()
        self.probes_sent = 0
        self.timeouts = 0
        self.spared = 0  # expiries put off because the loop lagged or bytes were waiting unread
        remoted.on_session_opened.append(self.track)

    def track(self, session: Session) -> None:
        heapq.heappush(self._heap, (session.last_received + self.interval, next(self._order), session))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.check(self.remoted.monotonic())

    def check(self, now: float) -> None:
        """Pop every session whose look is due; its real `last_received` decides what happens.

        Each session has at most one entry, keyed by the moment it next needs a look. Still fresh: it goes
        back with a later deadline. Silent for `interval`: it gets `#!-req <counter> agent getstate`. Silent
        for `timeout` plus the loop's recent lag, with nothing unread in its socket: it is marked
        disconnected (code 4) and closed.
        """
        heap = self._heap
        allowance = self.lag.allowance() if self.lag is not None else 0.0
        timeout = self.timeout + allowance
        while heap and heap[0][0] <= now:
            _, order, session = heapq.heappop(heap)
            if session.closed:
                continue
            silence = now - session.last_received
            if silence >= self.timeout:
                if silence < timeout or unread_bytes(session):
                    self.spared += 1  # the manager, not the agent, is behind: look again soon
                    heapq.heappush(heap, (now + UNREAD_RECHECK, order, session))
                    continue
                self._expire(session, silence, overload_of(allowance))
                continue
            if silence >= self.interval:
                if session.probed_at < session.last_received:
                    self._probe(session, now)
                deadline = session.last_received + self.timeout
            else:
                deadline = session.last_received + self.interval
            heapq.heappush(heap, (deadline, order, session))

    def _probe(self, session: Session, now: float) -> None:
        session.probed_at = now
        entry = self.remoted.agent_on(session)
        if entry is None:
            return
        counter = f"{random.getrandbits(32):x}"
        if self.remoted.outbound.send_on(
            session, entry, control.build_request(counter, control.AGENT_TARGET, control.GETSTATE)
        ):
            self.probes_sent += 1
            log.debug(
                "Agent %s silent for %.1f s: probed with getstate", entry.key.id, now - session.last_received
            )

    def _expire(self, session: Session, silence: float, overload: float = 0.0) -> None:
        self.timeouts += 1
        entry = self.remoted.agent_on(session)
        session.close(CloseReason.TIMEOUT)  # the timeout is the status change; the close adds none
        if entry is None:
            log.debug("Closing a connection from '%s' that never authenticated", session.peer_ip)
            return
        log.info("Agent %s silent for %.1f s: disconnected (code 4)", entry.key.id, silence)
        self.remoted.store.submit(
            StatusUpdate(entry.number, Trigger.TIMEOUT, self.remoted.clock(), overload=overload)
        )

    def __len__(self) -> int:
        return len(self._heap)
