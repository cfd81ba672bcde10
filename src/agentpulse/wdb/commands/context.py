"""`Context`: what a command handler works with, and `Command`, what the dispatch table holds.

The store (writes, and the in-memory agent views), its reader (SQL reads, run on the read pool so that no
query runs on the event loop), the clock, the server's options, what the manager lets commands ask of it
(send to agents, reload client.keys), and the one piece of state a command keeps between calls. The pools
exist between the server's start and stop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from agentpulse.remoted.keyguard import ReloadDecision
from agentpulse.shared.control import SharedControl
from agentpulse.store.facade import Store
from agentpulse.wdb.protocol import Reply, dumps, page

T = TypeVar("T")
KeysReload = Callable[[bool], Awaitable[ReloadDecision]]  # force -> what the manager decided
COMMIT_TIMEOUT = 60.0  # seconds a write command waits for its batch to be committed
ALLOW_SQL_READ_ONLY = "read-only"


class Context:
    def __init__(
        self,
        store: Store,
        *,
        allow_sql: str,
        sql_time_limit: float,
        send_to_agents: Callable[[list[int], bytes], int] | None,
        clock: Callable[[], float],
        reload_keys: KeysReload | None = None,
        shared: SharedControl | None = None,
    ) -> None:
        self.store = store
        self.reader = store.reader()
        self.allow_sql = allow_sql
        self.sql_time_limit = sql_time_limit
        self.send_to_agents = send_to_agents
        self.reload_keys = reload_keys
        self.shared = shared  # the shared-files rollout (`remoted shared-*`)
        self.clock = clock
        self.readers: ThreadPoolExecutor | None = None  # the read pool
        self.sql_thread: ThreadPoolExecutor | None = None  # ad-hoc `sql`, one at a time, apart from the reads
        self.sync_last_id = 0  # sync-agent-info-get keeps it between calls, like Wazuh's static

    async def read(self, job: Callable[[], T]) -> T:
        """Run `job` (reads through `self.reader`) in the read pool."""
        return await self._run(self.readers, job)

    async def read_json(self, job: Callable[[], object]) -> Reply:
        """`ok <JSON of what job returns>`, read and encoded in the read pool."""
        return "ok " + await self.read(lambda: dumps(job()))

    async def read_page(self, job: Callable[[], Iterable[object]]) -> Reply:
        """`ok|due <the items that fit>` of the items job gives, read and paged in the read pool."""

        def run() -> Reply:
            status, text, _ = page(job())
            return f"{status} {text}"

        return await self.read(run)

    async def read_sql(self, job: Callable[[], T]) -> T:
        return await self._run(self.sql_thread, job)

    @staticmethod
    async def _run(pool: ThreadPoolExecutor | None, job: Callable[[], T]) -> T:
        if pool is None:
            raise RuntimeError("the query socket is stopped")
        return await asyncio.get_running_loop().run_in_executor(pool, job)

    async def committed(self) -> None:
        """Wait for the store to commit what this command queued, so a client reads back what it wrote."""
        await asyncio.wait_for(asyncio.wrap_future(self.store.committed()), COMMIT_TIMEOUT)

    def known(self, agent_id: int) -> bool:
        return agent_id in self.store.agents


Handler = Callable[[Context, str], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Command:
    handler: Handler
    needs_argument: bool = True  # `global <command>` without an argument is a syntax error
