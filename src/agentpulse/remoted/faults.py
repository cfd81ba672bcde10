"""Unexpected exceptions at the frame boundary: a bug, or input nobody foresaw, costs one line, not a flood.

Anything but a WireError that escapes the handling of one frame or datagram is counted and logged as one
rate-limited line naming its type (never its message: that may hold an agent's bytes), and the session
closes. The full traceback, escaped, is logged at most once per `TRACEBACK_INTERVAL`: enough to find the
bug, too rare for one malformed message repeated by thousands of connections to fill the disk.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable

from agentpulse.ratelimit import RateLimitedLog

TRACEBACK_INTERVAL = 600.0  # seconds between two logged tracebacks


def escaped_traceback(error: BaseException) -> str:
    """The traceback, its message as a repr: an exception's message can quote what an agent sent (a newline
    in it must not start a line of its own in the log). The frames are our own code."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{type(error).__qualname__}: {str(error)!r}"


class FaultLog:
    def __init__(
        self,
        logger: logging.Logger,
        monotonic: Callable[[], float] = time.monotonic,
        traceback_interval: float = TRACEBACK_INTERVAL,
    ) -> None:
        self.logger = logger
        self.monotonic = monotonic
        self.traceback_interval = traceback_interval
        self.count = 0  # unexpected exceptions since start
        self._warn = RateLimitedLog(logger, monotonic=monotonic)
        self._last_traceback: float | None = None

    def record(self, error: Exception, who: str) -> None:
        """One unexpected exception while handling a message from `who` (an agent id or a quoted IP)."""
        self.count += 1
        kind = type(error).__name__
        now = self.monotonic()
        if self._last_traceback is None or now - self._last_traceback >= self.traceback_interval:
            self._last_traceback = now
            self.logger.error(
                "Unexpected %s while handling a message from %s (%d so far); connection closed; "
                "traceback (logged at most once per %.0f s):\n%s",
                kind,
                who,
                self.count,
                self.traceback_interval,
                escaped_traceback(error),
            )
            return
        self._warn.warning(
            f"unexpected:{kind}",
            "Unexpected %s while handling a message from %s (%d so far); connection closed",
            kind,
            who,
            self.count,
        )
