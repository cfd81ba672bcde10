"""`HoldersFeed`: this node's view follows, from the database, the agents the other nodes hold.

A node hears at once when another node takes one of its agents (`bindings.py`), but nothing tells it of
what the other nodes do later with theirs (an agent held by node-b disconnects: node-a's metrics, its API
summary and its reconnect route would go on counting it as node-b's active agent). And a notification
sent while this node's listening connection was down is never delivered (NOTIFY is not queued for a
session that is not there). So every `interval` this feed reads what changed in the database and hands
it to the manager (`NodeFollow.followed`): each agent's holder, status, code and sequence, as committed.

What changed: every write of an agent's status or binding stamps its `agent_runtime` row with the
writing transaction's id (`changed`, schema version 5; each node's writer, a survivor's take-over). A
read remembers the oldest transaction still running when it began (`pg_snapshot_xmin`): every
transaction that commits after it has an id at least that, so the next read asks for the rows stamped
since then and misses none, whichever order the nodes' transactions commit in (some rows are read twice;
following is idempotent). The first read takes every row another node holds. A row keeps only the
latest stamp, so what is read is each agent's current state, never a history.

The danger is a read that began before this node's own latest binding of an agent committed: it shows
the holder before it, which says nothing of who took the agent since. `NodeFollow` skips those
(`Store.binding_unsettled`, against the writer's `settled` batch read before the query).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import psycopg

from agentpulse.cluster.lease import OPERATION_TIMEOUT, Connection, Ticker, close_quietly, connect
from agentpulse.status import ConnectionStatus, StatusCode

log = logging.getLogger(__name__)

FOLLOW_INTERVAL: Final = 0.5  # seconds between two reads: a change on another node shows here within ~1.5 s
XMIN: Final = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"
_ROWS: Final = (
    "SELECT r.agent_id, r.node_name, COALESCE(r.node_epoch, 0), r.bound_kept, r.status_seq, "
    "a.connection_status, a.status_code FROM agent_runtime r JOIN agent a ON a.id = r.agent_id "
    "WHERE r.node_name <> %(node)s"
)
EVERY_ROW: Final = _ROWS
CHANGED_ROWS: Final = _ROWS + " AND r.changed >= %(since)s::xid8"


@dataclass(frozen=True, slots=True)
class HolderRow:
    """One agent another node holds (or held last), as committed."""

    agent_id: int
    node: str
    epoch: int
    kept: bool  # that node kept its older live connection against a newer one (a "kept" binding)
    seq: int
    status: ConnectionStatus
    code: StatusCode


@dataclass(frozen=True, slots=True)
class Followed:
    """One read: its rows, and the writer's `settled` batch number read before it began."""

    rows: tuple[HolderRow, ...]
    settled: int


class HoldersFeed:
    def __init__(
        self,
        dsn: str,
        node: str,
        on_rows: Callable[[Followed], None],
        settled: Callable[[], int],
        *,
        interval: float = FOLLOW_INTERVAL,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.on_rows = on_rows
        self.settled = settled  # Store.settled, read on the loop before each query
        self.interval = interval
        self.reads = 0
        self.rows = 0  # rows read in all (tests, logs)
        self._since: str | None = None  # the xmin at the start of the last read that was applied
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticker = Ticker()
        self._soon = asyncio.Event()

    async def start(self) -> None:
        self._ticker.reset()
        self._task = asyncio.create_task(self._run(), name=f"holders-{self.node}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._soon.set()
        await self._ticker.end(task)
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)

    def catch_up(self) -> None:
        """Read now, not at the next interval (the listening connection is back: what it missed is here)."""
        self._soon.set()

    async def _run(self) -> None:
        failing = False
        while not self._ticker.stopping:
            try:
                await asyncio.wait_for(self.once(), OPERATION_TIMEOUT)
                if failing:
                    log.info("Node %s follows the other nodes' agents again", self.node)
                failing = False
            except (psycopg.Error, OSError, TimeoutError) as error:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await close_quietly(conn)
                if not failing:
                    log.warning(
                        "Node %s cannot read the other nodes' agents: %s; retrying (it catches up then)",
                        self.node,
                        error,
                    )
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), self.interval)
            self._soon.clear()

    async def once(self) -> int:
        """One read, applied; how many rows it had."""
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn, f"agentpulse:{self.node}:holders")
        settled = self.settled()
        # The xmin first: a transaction that commits after the rows' read began is at least as new.
        row = await (await self._conn.execute(XMIN)).fetchone()
        xmin = str(row[0]) if row is not None else None
        if self._since is None:
            cursor = await self._conn.execute(EVERY_ROW, {"node": self.node})
        else:
            cursor = await self._conn.execute(CHANGED_ROWS, {"node": self.node, "since": self._since})
        rows = tuple(
            HolderRow(
                int(agent_id),
                str(node),
                int(epoch),
                bool(kept),
                int(seq),
                ConnectionStatus(status),
                StatusCode(code or 0),
            )
            for agent_id, node, epoch, kept, seq, status, code in await cursor.fetchall()
        )
        self.reads += 1
        self.rows += len(rows)
        if rows:
            try:
                self.on_rows(Followed(rows, settled))
            except Exception:  # a bug there must not stop the following (nor repeat every interval)
                log.exception("Node %s: following the other nodes' agents failed", self.node)
        self._since = xmin  # only once read: a failed query reads the same rows again
        return len(rows)
