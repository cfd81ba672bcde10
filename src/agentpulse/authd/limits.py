"""Who may open an enrolment connection now: checked at accept, before any TLS work is spent on it.

A TLS handshake costs the manager a key exchange and a signature, so one address that opens connections
as fast as it can would take the listener (and a core) for itself. Each source address gets `rate` new
connections per second (a bucket of `rate` tokens, refilled continuously) and `rate` open at once; all
sources together get `total` open at once (Wazuh's pool of 1000). Pure: the clock is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

TOO_MANY: Final = "Too many connections"
TOO_FAST: Final = "more than {rate} connections per second from this address"
TOO_MANY_OPEN: Final = "more than {rate} connections open from this address"
FORGET_ABOVE: Final = 4096  # sources tracked before idle ones are forgotten


@dataclass(slots=True)
class _Source:
    tokens: float
    at: float
    open: int = 0


class SourceLimits:
    def __init__(self, rate: int, total: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate  # 0: no limit per source
        self.total = total
        self.monotonic = monotonic
        self.open = 0
        self._sources: dict[str, _Source] = {}

    def admit(self, source: str) -> str | None:
        """None when the connection may go on (release() it when it ends), else why not."""
        if self.open >= self.total:
            return TOO_MANY
        if self.rate:
            now = self.monotonic()
            state = self._sources.get(source)
            if state is None:
                if len(self._sources) >= FORGET_ABOVE:
                    self._forget_idle(now)
                state = self._sources[source] = _Source(float(self.rate), now)
            else:
                state.tokens = min(float(self.rate), state.tokens + (now - state.at) * self.rate)
                state.at = now
            if state.open >= self.rate:
                return TOO_MANY_OPEN.format(rate=self.rate)
            if state.tokens < 1.0:
                return TOO_FAST.format(rate=self.rate)
            state.tokens -= 1.0
            state.open += 1
        self.open += 1
        return None

    def release(self, source: str) -> None:
        self.open -= 1
        state = self._sources.get(source)
        if state is not None:
            state.open -= 1

    def _forget_idle(self, now: float) -> None:
        """Sources with nothing open whose bucket is full again (a second refills it) hold nothing."""
        for source, state in list(self._sources.items()):
            if state.open == 0 and now - state.at >= 1.0:
                del self._sources[source]
