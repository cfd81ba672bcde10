"""Connection grace (docs/operations.md): an agent whose connection closed is disconnected (code 6) only
if no connection of it is bound again within `connection_grace` seconds.

While the manager is overloaded (`allowance`: its loops or the record pipe behind, `looplag.py`) an agent
whose connection closed may be waiting in our accept queue, or held out by admission, to bind again: the
grace then runs on by the lag at its end, again and again while the overload lasts, for at most
`max_stretch` seconds in all (the manager gives `agents_disconnection_time`: an agent whose connection
closed is not lost sooner than a silent one would be swept, and the sweeper stretches by the same lag),
so the manager's slowness does not make its agents disconnected. The 200,000-agent preset at 4x overload
(bench/RESULTS.md) had agents lost at 90-106 s of lag that came back 140 s after on average: a bound of
an agent's own handshake wait (60 s) was too short. A loss that happens all the same says so in its
history row (the manager's `_connection_lost`).

Holders are counted per remoted process, so with several workers an agent that reconnected to another
worker is not disconnected when its old connection on the first one finally closes. `GraceEvents` is what
the bindings report to: this tracker in-process, or the record pipe to it from a worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from agentpulse.looplag import overload_of
from agentpulse.records import StatusUpdate
from agentpulse.status import Trigger

LOCAL = 0  # the holder id of an in-process remoted
MAX_STRETCH = 900.0  # seconds a grace may be stretched in all, by default (agents_disconnection_time's)


class GraceEvents(Protocol):
    """Which agents a remoted process holds a connection of, as its bindings change."""

    def bound(self, agent_id: int, holder: int = LOCAL) -> None: ...

    def closed(self, agent_id: int, holder: int = LOCAL) -> None: ...

    def released(self, agent_id: int, holder: int = LOCAL) -> None: ...


class GraceTracker:
    def __init__(
        self,
        submit: Callable[[StatusUpdate], object],
        grace: float,
        clock: Callable[[], float] = time.time,
        loop: asyncio.AbstractEventLoop | None = None,  # None: the running loop (tests pass their own)
        allowance: Callable[[], float] | None = None,  # seconds the manager is behind reading its agents
        max_stretch: float = MAX_STRETCH,
    ) -> None:
        self.submit = submit
        self.grace = grace
        self.clock = clock
        self.loop = loop
        self.allowance = allowance
        self.max_stretch = max_stretch
        self.stretches = 0  # graces run on because the manager was behind at their end, since start
        self._stretched: dict[int, float] = {}  # agent -> seconds its running grace was stretched so far
        # agent -> bit mask of the processes holding a connection of it: small ints, no set per agent
        self._holders: dict[int, int] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def bound(self, agent_id: int, holder: int = LOCAL) -> None:
        """A connection of the agent is bound in `holder`: any grace running for it stops."""
        self._holders[agent_id] = self._holders.get(agent_id, 0) | (1 << holder)
        self.forget(agent_id)

    def holder_mask(self, agent_id: int) -> int:
        """The bit mask of the processes holding a connection of the agent (bit i: holder i)."""
        return self._holders.get(agent_id, 0)

    def closed(self, agent_id: int, holder: int = LOCAL) -> None:
        """The holder's connection of the agent was lost: grace starts when no other holder has one."""
        holders = self._holders.get(agent_id, 0)
        if not holders & (1 << holder):
            return
        if self._drop(agent_id, holder):
            return
        if agent_id not in self._timers:
            self._start(agent_id, self.grace)

    def released(self, agent_id: int, holder: int = LOCAL) -> None:
        """The holder let the agent go without a connection loss (overtake, timeout, key removal)."""
        if agent_id in self._holders:
            self._drop(agent_id, holder)

    def _drop(self, agent_id: int, holder: int) -> bool:
        """Forget one holder; True if others still hold the agent."""
        remaining = self._holders[agent_id] & ~(1 << holder)
        if remaining:
            self._holders[agent_id] = remaining
            return True
        del self._holders[agent_id]
        return False

    def forget(self, agent_id: int) -> None:
        """Another node holds the agent now: the grace running here for it ends without a loss."""
        timer = self._timers.pop(agent_id, None)
        if timer is not None:
            timer.cancel()
            self._stretched.pop(agent_id, None)

    def holders(self, agent_id: int) -> list[int]:
        """The processes holding a connection of the agent now (LOCAL, or worker indexes)."""
        mask = self._holders.get(agent_id, 0)
        return [holder for holder in range(mask.bit_length()) if mask & (1 << holder)]

    def holder_lost(self, holder: int) -> list[int]:
        """A worker died: every agent it held lost its connection now."""
        bit = 1 << holder
        lost = [agent_id for agent_id, holders in self._holders.items() if holders & bit]
        for agent_id in lost:
            self.closed(agent_id, holder)
        return lost

    def _start(self, agent_id: int, seconds: float) -> None:
        loop = self.loop or asyncio.get_running_loop()
        self._timers[agent_id] = loop.call_later(seconds, self._expired, agent_id)

    def _expired(self, agent_id: int) -> None:
        self._timers.pop(agent_id, None)
        if agent_id in self._holders:
            self._stretched.pop(agent_id, None)
            return
        stretched = self._stretched.get(agent_id, 0.0)
        behind = overload_of(self.allowance()) if self.allowance is not None else 0.0
        if behind and stretched < self.max_stretch:
            more = min(behind, self.max_stretch - stretched)
            self._stretched[agent_id] = stretched + more
            self.stretches += 1
            self._start(agent_id, more)
            return
        self._stretched.pop(agent_id, None)
        self.submit(StatusUpdate(agent_id, Trigger.CONNECTION_LOST, self.clock()))

    def cancel_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._stretched.clear()
