"""The automatic vacuum of the global database: measured every `interval` seconds, compacted when needed.

A mass deletion frees pages without disordering the rest, so the check looks at both numbers the backend
measures (fragmentation and the share of free pages): it vacuums when either passes `max_fragmentation`.
The vacuum runs on the store's writer thread between two batches, the measure in a thread: neither ever
runs on the event loop. The SQLite measures themselves are in `store/sqlite/maintenance.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable

from agentpulse.store.backend import StoreError
from agentpulse.store.facade import Store

log = logging.getLogger(__name__)


class Upkeep:
    """Every `interval` seconds, vacuum global.db when its fragmentation or its share of free pages passes
    `max_fragmentation`.

    Only global.db: per-agent databases are small and hold nothing agentpulse rewrites often; they are
    vacuumed on demand (`agentpulse db vacuum --agent ID`, or `agent <id> vacuum` on the socket).
    """

    def __init__(self, store: Store, max_fragmentation: float, interval: float) -> None:
        self.store = store
        self.max_fragmentation = max_fragmentation
        self.interval = interval
        self.vacuums = 0
        # Several nodes share one PostgreSQL: only the leader vacuums it (the manager sets this).
        self.active: Callable[[], bool] = lambda: True
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="db-upkeep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.active():
                continue
            try:
                await self.check()
            except (StoreError, sqlite3.Error, OSError, RuntimeError):
                log.exception("global.db fragmentation check failed")

    async def check(self) -> int | None:
        """Measure, and vacuum when over the limit; returns the fragmentation after a vacuum, else None."""
        state = await asyncio.to_thread(self.store.fragmentation)
        worst = max(state.fragmentation, state.free_pages_percentage)
        if worst <= self.max_fragmentation:
            log.debug(
                "global.db fragmentation %d%%, free pages %d%% (max %g%%)",
                state.fragmentation,
                state.free_pages_percentage,
                self.max_fragmentation,
            )
            return None
        after = await asyncio.wrap_future(self.store.vacuum())
        self.vacuums += 1
        log.info(
            "global.db fragmentation %d%%, free pages %d%%, above %g%%: vacuumed, fragmentation now %d%%",
            state.fragmentation,
            state.free_pages_percentage,
            self.max_fragmentation,
            after,
        )
        return after
