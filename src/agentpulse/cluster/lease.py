"""`NodeLease`: this node's heartbeat row in `cluster_node`, renewed every second on a connection of its own;
`claim_expired`, which hands each expired lease to exactly one survivor.

The renewals run in a thread, on a blocking connection, not on the node's event loop: a loop that lags
past the ttl (a restart storm on a starved machine) is a busy node, not a dead one, and taking its agents
over while it is alive made the storm feed itself (bench/RESULTS.md, the 50,000-agent storm over 3 nodes).
A process that is gone, or hung as a whole, still stops renewing.

Times are the database's clock (`clock_timestamp()`), so the nodes' clocks may disagree. Each start of a
node takes a new `epoch`; a renewal only succeeds for the epoch it registered, so a second process with
the same node name, or a survivor that already claimed the lease, makes the old holder lose it (`lost`).
The danger is a node that keeps serving after its lease expired: it must treat `lost` as "my agents were
declared disconnected elsewhere" and register again (`NodeLease.start` after `stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from agentpulse.cluster import sql

Connection = psycopg.AsyncConnection[TupleRow]

log = logging.getLogger(__name__)

RENEW_INTERVAL: Final = 1.0  # seconds between renewals
LEASE_TTL: Final = 3.0  # a lease not renewed for this long has expired (<cluster><lease_ttl>)
STATEMENT_TIMEOUT: Final = 2.0  # one renewal: a database that hangs counts as one that fails
# An outer bound on one database round (connect and a statement); libpq's own timeouts (connect_timeout,
# tcp_user_timeout, statement_timeout) come first, this only catches what they do not.
OPERATION_TIMEOUT: Final = 6.0
CLOSE_TIMEOUT: Final = 1.0


def renew_interval_for(ttl: float) -> float:
    """How often a lease of `ttl` seconds is renewed: every second, or every third of a shorter ttl, so
    two renewals may be missed before it expires."""
    return min(RENEW_INTERVAL, ttl / 3)


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One row of `cluster_node` as the database sees it now."""

    name: str
    host: str
    epoch: int
    started: datetime
    renewed: datetime
    expires: datetime
    expired: bool
    claimed: bool  # a survivor took over this epoch's agents (claim_expired)


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A lease `claim_expired` handed to the caller: `name`'s agents bound in `epoch` are its to close."""

    name: str
    epoch: int
    expired_for: float  # seconds since it expired


async def connect(dsn: str, application: str) -> Connection:
    """An autocommit session named for `pg_stat_activity`, with short server-side TCP keep-alives so a
    peer that vanishes without a FIN (power loss) is noticed in seconds, not hours."""
    conninfo = make_conninfo(
        dsn, connect_timeout=int(STATEMENT_TIMEOUT) + 1, application_name=application, **sql.CLIENT_KEEPALIVES
    )
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        await conn.execute(sql.SESSION_SETTINGS)
    except BaseException:
        await close_quietly(conn)
        raise
    return conn


def connect_blocking(dsn: str, application: str) -> psycopg.Connection[TupleRow]:
    """`connect`'s session, blocking: for the renewal thread."""
    conninfo = make_conninfo(
        dsn, connect_timeout=int(STATEMENT_TIMEOUT) + 1, application_name=application, **sql.CLIENT_KEEPALIVES
    )
    conn = psycopg.connect(conninfo, autocommit=True)
    try:
        conn.execute(sql.SESSION_SETTINGS)
    except BaseException:
        conn.close()
        raise
    return conn


async def close_quietly(conn: Connection) -> None:
    """Close, bounded: a connection left mid-query by a cancellation may never close politely, so its
    socket is then simply shut (libpq's PQfinish)."""
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
    except Exception:
        with contextlib.suppress(Exception):
            conn.pgconn.finish()


class Ticker:
    """A loop's sleep that `stop()` ends at once, so a task is asked to end between two queries and is
    never cancelled in the middle of one (see `close_quietly`)."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    async def sleep(self, seconds: float) -> bool:
        """Sleep; True when stopping (at once, or during the sleep)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def reset(self) -> None:
        self._stopping.clear()

    async def end(self, task: asyncio.Task[None] | None) -> None:
        """Ask the task's loop to end and wait for it (bounded; past the bound it is cancelled)."""
        self._stopping.set()
        if task is None:
            return
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, OPERATION_TIMEOUT + 1)


async def ensure_schema(conn: Connection) -> None:
    """Create `cluster_node` if missing. Under a transaction-scoped advisory lock: nodes starting together
    would otherwise race in CREATE TABLE IF NOT EXISTS (PostgreSQL then fails one with a duplicate key in
    pg_type) and that node would not start."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (sql.SCHEMA_LOCK,))
        await conn.execute(sql.CREATE_CLUSTER_NODE)


class NodeLease:
    """Register `name` (a new epoch), then renew every `interval` until `stop()`.

    `held` is True while the last renewal succeeded within `ttl`; `lost` is set (and `on_lost` called once)
    when a renewal finds the row taken by a newer epoch or claimed by a survivor.
    """

    def __init__(
        self,
        dsn: str,
        name: str,
        *,
        interval: float = RENEW_INTERVAL,
        ttl: float = LEASE_TTL,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 < interval < ttl:
            raise ValueError("the renewal interval must be above 0 and below the lease's ttl")
        self.dsn = dsn
        self.name = name
        self.interval = interval
        self.ttl = ttl
        self.on_lost = on_lost
        self.epoch = 0
        self.lost = asyncio.Event()
        self._conn: Connection | None = None
        self._thread: threading.Thread | None = None
        self._stop_renewing = threading.Event()
        self._renewed_at = 0.0  # monotonic time of the last successful renewal
        # Monotonic time since which every renewal succeeded within the ttl of the one before: a survivor only
        # takes others' expired leases over once its own has been unbroken for long enough (see
        # `unbroken_for`), because a lease that expired while the database was away is not a dead node.
        self._unbroken_since = 0.0
        self.breaks = 0  # renewals that came after a failure or later than the ttl, since start
        self._failing = False

    @property
    def held(self) -> bool:
        return not self.lost.is_set() and self.epoch > 0 and time.monotonic() - self._renewed_at < self.ttl

    async def start(self) -> int:
        """Register (the row's epoch goes up by one) and start renewing; the new epoch."""
        conn = await self._connection()
        await ensure_schema(conn)
        cursor = await conn.execute(sql.REGISTER_NODE, (self.name, socket.gethostname(), self.ttl))
        row = await cursor.fetchone()
        assert row is not None
        self.epoch = int(row[0])
        self.lost.clear()
        self._renewed_at = self._unbroken_since = time.monotonic()
        self.start_renewing()
        log.info("Cluster lease of node %s held (epoch %d, ttl %.1f s)", self.name, self.epoch, self.ttl)
        return self.epoch

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn, f"agentpulse:{self.name}:lease")
        return self._conn

    def start_renewing(self) -> None:
        """The renewal thread, every `interval` until `stop()` (or `stop_renewing()`, as a test pauses it)."""
        self._stop_renewing = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_forever,
            args=(asyncio.get_running_loop(), self._stop_renewing),
            name=f"lease-{self.name}",
            daemon=True,
        )
        self._thread.start()

    async def stop_renewing(self) -> None:
        thread, self._thread = self._thread, None
        self._stop_renewing.set()
        if thread is not None:
            await asyncio.to_thread(thread.join, OPERATION_TIMEOUT + 1)

    def _renew_forever(self, loop: asyncio.AbstractEventLoop, stopping: threading.Event) -> None:
        conn: psycopg.Connection[TupleRow] | None = None
        try:
            while not stopping.wait(self.interval):
                try:
                    if conn is None or conn.closed:
                        conn = connect_blocking(self.dsn, f"agentpulse:{self.name}:lease")
                    renewed = conn.execute(sql.RENEW_NODE, (self.ttl, self.name, self.epoch)).fetchone()
                except (psycopg.Error, OSError) as error:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                    if not self._failing:
                        self._failing = True
                        log.warning("Cluster lease of node %s not renewed: %s; retrying", self.name, error)
                    continue
                if stopping.is_set():
                    return
                if renewed is None:
                    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                        loop.call_soon_threadsafe(
                            self._lose, "a newer start of this node name, or a survivor, took the lease"
                        )
                    return
                self._renewed(time.monotonic())
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _renewed(self, now: float) -> None:
        if self._failing or now - self._renewed_at >= self.ttl:
            self._unbroken_since = now  # a break: this lease (and maybe every other) ran out meanwhile
            self.breaks += 1
        self._renewed_at = now
        if self._failing:
            self._failing = False
            log.info("Cluster lease of node %s renewed again", self.name)

    def unbroken_for(self) -> float:
        """Seconds this lease has been renewed without a break (0 when it is not held).

        After a database outage every lease has expired on the database's clock, the live nodes' as much as
        a dead one's; the live ones renew within a renewal interval of the database's return. A survivor
        that waits until its own lease has been unbroken for ttl + grace before claiming gives each live
        node the same ttl + grace it would have had with the database up: only a node that stays silent
        that long while the database answers is taken over.
        """
        if not self.held:
            return 0.0
        return time.monotonic() - self._unbroken_since

    async def renew(self) -> bool:
        """One renewal; False when this epoch no longer holds the row."""
        conn = await self._connection()
        cursor = await conn.execute(sql.RENEW_NODE, (self.ttl, self.name, self.epoch))
        return await cursor.fetchone() is not None

    def _lose(self, why: str) -> None:
        if self.lost.is_set():
            return
        log.error("Cluster lease of node %s (epoch %d) lost: %s", self.name, self.epoch, why)
        self.lost.set()
        if self.on_lost is not None:
            self.on_lost(why)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)

    async def stop(self, *, release: bool = True) -> None:
        """Stop renewing; `release` marks the lease expired now (a clean stop: survivors need not wait for
        the ttl before closing, after the grace, what stays bound to this node)."""
        await self.stop_renewing()
        if release and self.epoch and not self.lost.is_set():
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                conn = await self._connection()
                await asyncio.wait_for(
                    conn.execute(sql.RELEASE_NODE, (self.name, self.epoch)), STATEMENT_TIMEOUT
                )
        await self._drop_connection()


async def read_nodes(conn: Connection) -> list[NodeRow]:
    """Every node that ever held a lease, by name, with whether it has expired (database clock)."""
    cursor = await conn.execute(sql.READ_NODES)
    return [
        NodeRow(
            name=str(row[0]),
            host=str(row[1]),
            epoch=int(row[2]),
            started=_time(row[3]),
            renewed=_time(row[4]),
            expires=_time(row[5]),
            expired=bool(row[6]),
            claimed=bool(row[7]),
        )
        for row in await cursor.fetchall()
    ]


async def claim_expired(conn: Connection, grace: float = 0.0) -> list[ExpiredLease]:
    """The leases expired for more than `grace` seconds and not yet claimed, now claimed by the caller.

    One UPDATE ... RETURNING: when several survivors ask at once, each (name, epoch) goes to exactly one of
    them, so the code-6 pass over a dead node's agents runs exactly once.
    """
    cursor = await conn.execute(sql.CLAIM_EXPIRED, (grace,))
    return [ExpiredLease(str(row[0]), int(row[1]), float(row[2])) for row in await cursor.fetchall()]


async def claim_one_expired(conn: Connection, grace: float, claimer: str) -> ExpiredLease | None:
    """One lease expired for more than `grace` seconds and not yet claimed, never `claimer`'s own, now
    claimed by the caller (in the caller's transaction), or None. One per transaction: a take-over's last
    statements take the outbox lock, and a second take-over's row locks must not come after it
    (`store.postgresql.takeover`)."""
    cursor = await conn.execute(sql.CLAIM_ONE_EXPIRED, (grace, claimer))
    row = await cursor.fetchone()
    return None if row is None else ExpiredLease(str(row[0]), int(row[1]), float(row[2]))


def _time(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value
