"""How late an event loop runs its callbacks: the measure of "the manager is overloaded".

`LoopLag` schedules a tick every `period` and records how late it fired. A loop that runs late also reads
its sockets late, so any silence it measures is stretched by that much: the liveness deadlines (manager
keep-alive, sweeper) add `allowance()`, the peak lag of the recent past, before they blame an agent, and
admission stops taking new connections while `current` is high. The danger is a measure that itself
costs: one timer per loop, a few float operations per tick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PERIOD = 0.1  # seconds between ticks
HOLD = 30.0  # seconds a peak is remembered (a probe or sweep decision looks back that far)
OVERLOADED = 1.0  # seconds of lag from which a disconnection is said to happen under overload


class LoopLag:
    """The lag of the running loop: `current` (last tick), `peak` (max over the last `hold` seconds)."""

    def __init__(
        self,
        period: float = PERIOD,
        hold: float = HOLD,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period = period
        self.hold = hold
        self.monotonic = monotonic
        self.current = 0.0
        self.max_seen = 0.0  # over the whole run, for reports
        self._peak = 0.0
        self._peak_at = 0.0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.extra: Callable[[], float] | None = None  # another lag to add (e.g. the record pipe's delay)

    def start(self) -> None:
        self._due = self.monotonic() + self.period
        self._handle = asyncio.get_running_loop().call_at(self._loop_time(self._due), self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _loop_time(self, due: float) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (due - self.monotonic())

    def _tick(self) -> None:
        now = self.monotonic()
        self.note(max(0.0, now - self._due), now)
        self._due = now + self.period
        self._handle = asyncio.get_running_loop().call_later(self.period, self._tick)

    def note(self, lag: float, now: float) -> None:
        """A lag measured now (the tick's own, or one reported from elsewhere)."""
        self.current = lag
        if lag > self.max_seen:
            self.max_seen = lag
        if lag >= self._peak or now - self._peak_at > self.hold:
            self._peak, self._peak_at = lag, now

    @property
    def peak(self) -> float:
        """The largest lag of the last `hold` seconds (the current one when the peak is older)."""
        if self.monotonic() - self._peak_at > self.hold:
            return self.current
        return max(self._peak, self.current)

    def allowance(self) -> float:
        """Seconds a liveness deadline is stretched by: the recent peak lag, plus `extra` if any."""
        extra = self.extra() if self.extra is not None else 0.0
        return self.peak + extra


def overload_of(allowance: float) -> float:
    """The lag to record with a disconnection: `allowance` when it is overload, else 0."""
    return allowance if allowance >= OVERLOADED else 0.0
