"""A stop that always ends: a deadline, and a second SIGTERM or SIGINT that forces the exit.

The manager's stop awaits other things (worker processes, the last flush, NATS, a child nats-server), and
any of them can hang: a library that swallows a cancellation, a peer that never reads. `StopGuard` is a
thread, not a task, so it fires even when the event loop waits for ever or is blocked: once armed, after
`deadline` seconds, or at once on `force()`, it logs one line and ends the process with `os._exit`.
Nothing is lost that a normal start does not recover: acknowledgements not yet committed are in the
acknowledgement journal, status events not yet published in the outbox; worker processes and the embedded
nats-server die with the manager (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)

STOP_DEADLINE = 90.0  # seconds from the first SIGTERM to the forced exit
FORCED_EXIT = 1  # the exit status of a forced stop (0 when everything was committed before it)


class StopGuard:
    def __init__(self, deadline: float = STOP_DEADLINE) -> None:
        self.deadline = deadline
        self.committed = False  # set once the last flush committed everything: a forced exit is then 0
        self.phase = "starting the stop"  # what the stop is doing, for the line a forced exit logs
        self._main = threading.main_thread().ident
        self._forced = threading.Event()
        self._why = ""
        self._armed_at: float | None = None
        self._thread: threading.Thread | None = None

    @property
    def armed(self) -> bool:
        return self._armed_at is not None

    def arm(self) -> None:
        """The stop began: from now on the process ends within `deadline` seconds."""
        if self._thread is not None:
            return
        self._armed_at = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="stop-guard", daemon=True)
        self._thread.start()

    def force(self, why: str) -> None:
        """End now (a second signal)."""
        self._why = why
        if self._thread is None:
            self.arm()
        self._forced.set()

    def _watch(self) -> None:
        if not self._forced.wait(self.deadline):
            self._why = f"the stop took more than {self.deadline:.0f} s"
        assert self._armed_at is not None
        elapsed = time.monotonic() - self._armed_at
        code = 0 if self.committed else FORCED_EXIT
        frame = sys._current_frames().get(self._main) if self._main is not None else None
        where = "".join(traceback.format_stack(frame, limit=8)).rstrip() if frame is not None else "?"
        log.error(
            "Stop forced (%s) %.1f s after it began, while %s: exiting now%s; the main thread was at:\n%s",
            self._why,
            elapsed,
            self.phase,
            ""
            if self.committed
            else "; acknowledged keep-alives not yet committed are restored from the acknowledgement "
            "journal at the next start",
            where,
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):  # exiting: a broken handler must not stop the exit
                handler.flush()
        os._exit(code)
