"""`ClusterService`: what a node runs to be part of a cluster, as one manager service (`start`/`stop`):
its lease, the leader election, and, on the leader only, the claim of dead nodes' leases.

The manager gives it two callbacks: `on_leadership(bool)` (this node leads: upkeep and the outbox relay
run here) and `on_node_expired(conn, lease)`, run inside the transaction that claims the lease, so the code-6
rows written on `conn` and the claim commit together or not at all: a crash between them, or a callback
that raises, leaves the lease unclaimed and the next leader does it. That is the danger: writes made
elsewhere (another connection, the store's writer thread) are not covered by that transaction.

The other danger is a database outage: every lease expires on the database's clock while it is away, the
live nodes' too. The leader claims only once its own lease has been renewed without a break for
ttl + grace (`NodeLease.unbroken_for`), so the live nodes have renewed by then and only the silent ones
are taken over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import psycopg

from agentpulse.cluster.leader import TRY_INTERVAL, LeaderElection
from agentpulse.cluster.lease import (
    LEASE_TTL,
    OPERATION_TIMEOUT,
    RENEW_INTERVAL,
    Connection,
    ExpiredLease,
    NodeLease,
    Ticker,
    claim_one_expired,
    close_quietly,
    connect,
    read_nodes,
)

log = logging.getLogger(__name__)

CLAIM_INTERVAL: Final = 0.5  # how often the leader looks for expired leases
DUPLICATE_LOG_INTERVAL: Final = 30.0  # seconds between two errors about a node name another process holds

NodeExpired = Callable[[Connection, ExpiredLease], Awaitable[None]]


class ClusterService:
    def __init__(
        self,
        dsn: str,
        node: str,
        *,
        grace: float,
        on_node_expired: NodeExpired | None = None,
        on_epoch: Callable[[int], None] | None = None,
        on_leadership: Callable[[bool], None] | None = None,
        on_lease_lost: Callable[[str], None] | None = None,
        on_lease_regained: Callable[[int], None] | None = None,
        renew_interval: float = RENEW_INTERVAL,
        ttl: float = LEASE_TTL,
        try_interval: float = TRY_INTERVAL,
        claim_interval: float = CLAIM_INTERVAL,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.grace = grace
        self.on_node_expired = on_node_expired  # None: this node never claims (no take-over yet)
        self.on_epoch = on_epoch
        self.on_leadership = on_leadership
        self.claim_interval = claim_interval
        self.on_lease_lost = on_lease_lost
        self.on_lease_regained = on_lease_regained
        self.regain_interval = renew_interval
        self.lease = NodeLease(dsn, node, interval=renew_interval, ttl=ttl, on_lost=self._lost)
        self._regain: asyncio.Task[None] | None = None
        self.election = LeaderElection(
            dsn, node, interval=try_interval, on_elected=self._elected, on_lost=self._deposed
        )
        self.claimed: list[ExpiredLease] = []  # what this node took over, in order (for logs and tests)
        self.ttl = ttl
        self._holding_off = False  # claims wait for an unbroken lease (after an outage): said once
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticker = Ticker()

    @property
    def epoch(self) -> int:
        return self.lease.epoch

    @property
    def leader(self) -> bool:
        return self.election.leader

    async def start(self) -> None:
        """Register the lease (a new epoch), then take part in the election; claims run on the leader."""
        epoch = await self.lease.start()
        if self.on_epoch is not None:
            self.on_epoch(epoch)
        self.election.start()
        self._ticker.reset()
        if self.on_node_expired is not None:
            self._task = asyncio.create_task(self._claims(), name=f"claims-{self.node}")

    def _lost(self, why: str) -> None:
        """The lease is gone (a survivor claimed it, or a newer start of this name took it): the manager
        stops serving agents, this node leaves the leader election (a node the others may take for dead
        must not run the cluster's duties), and it registers again (a new epoch) once no other live
        process holds its name, then takes part in the election again."""
        if self.on_lease_lost is not None:
            self.on_lease_lost(why)
        if self._regain is None or self._regain.done():
            self._regain = asyncio.create_task(self._register_again(why), name=f"regain-{self.node}")

    async def _register_again(self, why: str) -> None:
        await self.election.stop(f"its cluster lease was lost ({why})")
        told = -DUPLICATE_LOG_INTERVAL
        loop = asyncio.get_running_loop()
        while not await self._ticker.sleep(self.regain_interval):
            try:
                conn = await connect(self.dsn, f"agentpulse:{self.node}:regain")
                try:
                    rows = {row.name: row for row in await read_nodes(conn)}
                finally:
                    await close_quietly(conn)
                mine = rows.get(self.node)
                if (
                    mine is not None
                    and mine.epoch > self.lease.epoch
                    and not mine.expired
                    and not mine.claimed
                ):
                    if loop.time() - told >= DUPLICATE_LOG_INTERVAL:
                        told = loop.time()
                        log.error(
                            "Node name %s is held by another process (host %s, epoch %d, started %s): this "
                            "process serves no agents until that one stops; give each node its own "
                            "<node_name>",
                            self.node,
                            mine.host,
                            mine.epoch,
                            mine.started.isoformat(timespec="seconds"),
                        )
                    continue
                await self.lease.stop(release=False)
                epoch = await self.lease.start()
            except (psycopg.Error, OSError, TimeoutError) as error:
                log.debug("Node %s cannot register again yet: %s", self.node, error)
                continue
            log.warning("Node %s registered again (epoch %d): serving agents again", self.node, epoch)
            if self.on_epoch is not None:
                self.on_epoch(epoch)
            if self.on_lease_regained is not None:
                self.on_lease_regained(epoch)
            self.election.start()
            return

    def _elected(self) -> None:
        if self.on_leadership is not None:
            self.on_leadership(True)

    def _deposed(self, why: str) -> None:
        if self.on_leadership is not None:
            self.on_leadership(False)

    async def _claims(self) -> None:
        failing = False
        while not await self._ticker.sleep(self.claim_interval):
            if not self.election.leader or not self._may_claim():
                continue
            try:
                # Bounded (the take-over's own writes included), so a stuck claim cannot hold a leader.
                await asyncio.wait_for(self.claim_once(), OPERATION_TIMEOUT * 5)
            except (psycopg.Error, OSError, TimeoutError) as error:
                await self._drop_connection()
                if not failing:
                    failing = True
                    log.warning("Node %s cannot claim expired leases: %s; retrying", self.node, error)
                continue
            except Exception:
                # The callback failed: its transaction rolled back, the claim with it; try again later.
                log.exception("Node %s: taking over an expired node failed; retrying", self.node)
                continue
            failing = False

    def _may_claim(self) -> bool:
        """Claims wait until this node's own lease has been unbroken for ttl + grace: after an outage of
        the database the live nodes renew first, so their expired-looking leases are not taken over."""
        unbroken = self.lease.unbroken_for()
        wait = self.ttl + self.grace
        if unbroken >= wait:
            if self._holding_off:
                self._holding_off = False
                log.info(
                    "Node %s claims expired leases again (its own lease unbroken for %.1f s)",
                    self.node,
                    unbroken,
                )
            return True
        if not self._holding_off and self.lease.breaks > 0:  # not at start: waiting then is the rule
            self._holding_off = True
            log.info(
                "Node %s leads but claims no expired lease until its own has been renewed without a break for "
                "%.1f s (ttl + grace): leases that ran out while the database was away are the live nodes' too",
                self.node,
                wait,
            )
        return False

    async def claim_once(self) -> list[ExpiredLease]:
        """Claim what has been expired for `grace`, each lease in a transaction with its callback's writes
        (one lease per transaction: see `claim_one_expired`)."""
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn, f"agentpulse:{self.node}:claims")
        taken: list[ExpiredLease] = []
        assert self.on_node_expired is not None
        while True:
            async with self._conn.transaction():
                lease = await claim_one_expired(self._conn, self.grace, self.node)
                if lease is None:
                    break
                log.warning(
                    "Node %s (epoch %d) expired %.1f s ago: node %s takes over its agents",
                    lease.name,
                    lease.epoch,
                    lease.expired_for,
                    self.node,
                )
                await self.on_node_expired(self._conn, lease)
            taken.append(lease)
            self.claimed.append(lease)
        return taken

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)

    async def stop(self, *, release: bool = True) -> None:
        """Stop claiming, leave the election (unlocking), and release the lease (expired at once)."""
        task, self._task = self._task, None
        await self._ticker.end(task)
        regain, self._regain = self._regain, None
        if regain is not None:
            await self._ticker.end(regain)
        await self.election.stop()
        await self.lease.stop(release=release)
        await self._drop_connection()
