"""What every API handler works with: the store, a read pool off the loop, and what the manager lends.

Reads run in `read()` (a small thread pool; SQLite drops the GIL while it works), never on the loop. The
manager passes its operations in (`ManagerLink`), so the API never holds the manager itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agentpulse.store.facade import Store
from agentpulse.store.reader import Reader

T = TypeVar("T")
READ_THREADS = 2
READ_NICENESS = 10  # the read threads yield the CPU to remoted and the store (Linux: per thread)
CONFIG_COUNTS_TTL = 2.0  # seconds the summary's synced/not synced counts may be old
COMMIT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ManagerLink:
    """The manager's operations the API may ask for."""

    # ids, purge -> the ids removed (client.keys, then the store: history rows and status events)
    remove_agents: Callable[[list[int], bool], Awaitable[list[int]]]
    # ids, control message -> how many were told
    send_to_agents: Callable[[list[int], bytes], int]
    status: Callable[[], Awaitable[dict[str, object]]]
    metrics: Callable[[], tuple[bytes, str]] | None = None


def _lower_priority() -> None:
    """A reader thread runs SQLite without the GIL, so it competes for the CPU with keep-alive handling:
    on Linux a thread's nice value is its own, so this thread alone steps back."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + READ_NICENESS)
    except OSError:
        pass


class ApiContext:
    def __init__(self, store: Store, link: ManagerLink, shared_dir: Path) -> None:
        self.store = store
        self.link = link
        self.shared_dir = shared_dir
        # one connection per read thread, kept: the manager holds global.db open, so it is never idle
        self.reader: Reader = store.reader(keep_open=True)
        self.pool: ThreadPoolExecutor | None = None
        self._config_counts: dict[str, int] | None = None
        self._config_at = 0.0
        self._config_refresh: asyncio.Task[None] | None = None

    def open(self) -> None:
        self.pool = ThreadPoolExecutor(
            READ_THREADS, thread_name_prefix="api-read", initializer=_lower_priority
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    async def read(self, job: Callable[[], T]) -> T:
        if self.pool is None:
            raise RuntimeError("the API is stopped")
        return await asyncio.get_running_loop().run_in_executor(self.pool, job)

    async def committed(self) -> None:
        await asyncio.wait_for(asyncio.wrap_future(self.store.committed()), COMMIT_TIMEOUT)

    async def config_counts(self) -> dict[str, int]:
        """group_config_status counts, at most CONFIG_COUNTS_TTL old: refreshed behind the reply."""
        if self._config_counts is None:
            await self._refresh_config()
        elif time.monotonic() - self._config_at > CONFIG_COUNTS_TTL and (
            self._config_refresh is None or self._config_refresh.done()
        ):
            self._config_refresh = asyncio.create_task(self._refresh_config())
        return self._config_counts or {}

    async def _refresh_config(self) -> None:
        self._config_counts = await self.read(self.reader.config_counts)
        self._config_at = time.monotonic()
