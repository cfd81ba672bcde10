"""`LeaderElection`: which node runs the cluster-wide duties (the take-over of dead nodes' agents, upkeep,
the relay of the shared outbox; each node sweeps its own agents), decided by a PostgreSQL session advisory
lock (`pg_try_advisory_lock`) held on a connection of its own.

PostgreSQL frees the lock when that session ends, so a leader killed with SIGKILL (the kernel closes its
socket) is replaced at the followers' next try, within `interval`; one lost without a FIN (power loss)
within the server's TCP keep-alive (~3 s, `sql.SESSION_SETTINGS`). The danger is a leader that does not
know it lost the lock: it checks its session every `interval` and steps down (`on_lost`) at the first
failure, before anyone else can have been elected for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import psycopg

from agentpulse.cluster import sql
from agentpulse.cluster.lease import (
    OPERATION_TIMEOUT,
    STATEMENT_TIMEOUT,
    Connection,
    Ticker,
    close_quietly,
    connect,
)

log = logging.getLogger(__name__)

STOPPING: Final = "stopping"  # the step-down reason of a clean stop
TRY_INTERVAL: Final = 0.5  # seconds between a follower's tries, and between a leader's session checks


@dataclass(frozen=True, slots=True)
class LockHolder:
    """The session that holds a leader lock now, from pg_locks and pg_stat_activity."""

    node: str  # from its application_name, agentpulse:<node>:leader
    pid: int


class LeaderElection:
    """Try for the lock every `interval`; while held, check the session every `interval`.

    `on_elected()` is called when this node becomes the leader, `on_lost(why)` when it stops being one
    (its session failed, or `stop()`). Both run on the loop and must not block.
    """

    def __init__(
        self,
        dsn: str,
        node: str,
        *,
        key: int = sql.SWEEPER_LOCK,
        interval: float = TRY_INTERVAL,
        on_elected: Callable[[], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.key = key
        self.interval = interval
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.leader = False
        self.terms = 0  # how many times this node was elected
        self.changed = asyncio.Event()  # set at every election and loss (the tests wait on it)
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticker = Ticker()
        self._failing = False

    def start(self) -> None:
        self._ticker.reset()
        self._task = asyncio.create_task(self._run(), name=f"leader-{self.node}")

    async def _run(self) -> None:
        while not self._ticker.stopping:
            try:
                await asyncio.wait_for(self._step(), OPERATION_TIMEOUT)
            except (psycopg.Error, OSError, TimeoutError) as error:
                await self._session_failed(str(error).strip() or type(error).__name__)
            if await self._ticker.sleep(self.interval):
                return

    async def _step(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn, f"agentpulse:{self.node}:leader")
        if self.leader:
            await self._conn.execute(sql.PING)  # the session, and so the lock, still lives
            return
        cursor = await self._conn.execute(sql.TRY_LOCK, (self.key,))
        row = await cursor.fetchone()
        if row is not None and row[0] is True:
            self._elected()
        if self._failing:
            self._failing = False
            log.info("Leader election of node %s: the database answers again", self.node)

    def _elected(self) -> None:
        self.leader = True
        self.terms += 1
        self.changed.set()
        log.info("Node %s is the cluster leader (take-overs, upkeep, outbox relay)", self.node)
        if self.on_elected is not None:
            self.on_elected()

    async def _session_failed(self, why: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)
        if self.leader:
            self._step_down(f"its database session failed: {why}")
        elif not self._failing:
            self._failing = True
            log.warning("Leader election of node %s cannot reach the database: %s; retrying", self.node, why)

    def _step_down(self, why: str) -> None:
        self.leader = False
        self.changed.set()
        level = logging.INFO if why == STOPPING else logging.WARNING
        log.log(level, "Node %s is no longer the cluster leader: %s", self.node, why)
        if self.on_lost is not None:
            self.on_lost(why)

    async def stop(self, why: str = STOPPING) -> None:
        """Stop trying; a leader unlocks and closes its session, so a follower takes over at its next try.
        `why`: the step-down's reason (a node that lost its lease leaves the election until it has one)."""
        task, self._task = self._task, None
        await self._ticker.end(task)
        conn, self._conn = self._conn, None
        if conn is not None:
            if self.leader:
                with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                    await asyncio.wait_for(conn.execute(sql.UNLOCK, (self.key,)), STATEMENT_TIMEOUT)
            await close_quietly(conn)
        if self.leader:
            self._step_down(why)


async def lock_holder(conn: Connection, key: int = sql.SWEEPER_LOCK) -> LockHolder | None:
    """Who holds the leader lock now, or None (no leader: between a death and the next election)."""
    cursor = await conn.execute(sql.LOCK_HOLDER, (key, key))
    row = await cursor.fetchone()
    if row is None:
        return None
    application = str(row[0] or "")
    parts = application.split(":")
    node = parts[1] if len(parts) == 3 and parts[0] == "agentpulse" else application
    return LockHolder(node, int(row[1]))
