"""Rate-limited warnings and errors: anything an attacker, or a broken file, can trigger is logged at most
once per interval per kind.

`RateLimitedLog` counts what it suppresses and says how many with the next line of that kind, so a flood of
bad frames costs one log line per interval, not one per frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.monotonic = monotonic
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        self._log(logging.WARNING, kind, message, *args)

    def error(self, kind: str, message: str, *args: object) -> None:
        self._log(logging.ERROR, kind, message, *args)

    def _log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = self.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        if len(self._last) > 1024:  # kinds are bounded by our own code, but stay safe
            self._last.clear()
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        self.logger.log(level, message, *args)
