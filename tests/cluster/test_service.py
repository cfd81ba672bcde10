"""`ClusterService` with a real node process killed with SIGKILL: the survivor leads within 2 s and takes the
dead node over exactly once, after its lease expired and the grace passed; a failed take-over is retried;
after a database outage only the node that died meanwhile is taken over."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import pytest

from agentpulse.cluster.lease import Connection, ExpiredLease, connect, read_nodes
from agentpulse.cluster.service import ClusterService
from tests import pgserver
from tests.pgserver import PostgresServer

TTL = 1.0
GRACE = 1.0
FAST = {"renew_interval": 0.2, "ttl": TTL, "claim_interval": 0.1}

NODE_SCRIPT = """
import asyncio, sys
from agentpulse.cluster.service import ClusterService

async def nothing(conn, lease):
    pass

async def main():
    service = ClusterService(
        sys.argv[1], "node-child", grace=1.0, on_node_expired=nothing, renew_interval=0.2, ttl=1.0,
        on_leadership=lambda leader: print("leader" if leader else "follower", flush=True),
    )
    await service.start()
    print("epoch", service.epoch, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_killed_leader_node_is_replaced_within_2_s_and_taken_over_once_after_ttl_and_grace(
    dsn: str,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", NODE_SCRIPT, dsn], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["epoch", "1"]
        assert child.stdout.readline().strip() == "leader"

        async def scenario() -> None:
            taken: list[tuple[ExpiredLease, float]] = []
            leadership: list[bool] = []

            async def take_over(conn: Connection, lease: ExpiredLease) -> None:
                # What the code-6 pass will do: write in the claim's transaction.
                await conn.execute("CREATE TABLE IF NOT EXISTS closed (node TEXT, epoch BIGINT)")
                await conn.execute("INSERT INTO closed VALUES (%s, %s)", (lease.name, lease.epoch))
                taken.append((lease, time.monotonic()))

            survivor = ClusterService(
                dsn, "node-b", grace=GRACE, on_node_expired=take_over, on_leadership=leadership.append, **FAST
            )
            await survivor.start()
            await asyncio.sleep(1.0)
            assert not survivor.leader and taken == []

            child.kill()
            killed = time.monotonic()
            await asyncio.to_thread(child.wait, 10)
            while not survivor.leader:
                assert time.monotonic() - killed < 2.0, "no new leader within 2 s"
                await asyncio.sleep(0.02)
            while not taken:
                assert time.monotonic() - killed < TTL + GRACE + 1.0, "the dead node was not taken over"
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.5)  # more claim rounds: nothing more to take
            assert [(lease.name, lease.epoch) for lease, _ in taken] == [("node-child", 1)]
            assert taken[0][1] - killed >= GRACE  # not before the grace
            assert leadership == [True]
            conn = await connect(dsn, "test")
            cursor = await conn.execute("SELECT node, epoch FROM closed")
            assert await cursor.fetchall() == [("node-child", 1)]
            nodes = {row.name: row for row in await read_nodes(conn)}
            assert nodes["node-child"].claimed and not nodes["node-b"].expired
            await conn.close()
            await survivor.stop()
            assert leadership == [True, False]

        asyncio.run(scenario())
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_take_over_that_fails_rolls_its_claim_back_and_is_done_once_later(dsn: str) -> None:
    async def scenario() -> None:
        attempts: list[int] = []

        async def flaky(conn: Connection, lease: ExpiredLease) -> None:
            attempts.append(lease.epoch)
            await conn.execute("CREATE TABLE IF NOT EXISTS closed (node TEXT)")
            await conn.execute("INSERT INTO closed VALUES (%s)", (lease.name,))
            if len(attempts) == 1:
                raise RuntimeError("the first take-over fails half-way")

        dead = ClusterService(dsn, "node-a", grace=0.0, on_node_expired=flaky, **FAST)
        await dead.start()
        await dead.stop(release=True)  # a clean stop: expired at once, still to be taken over
        survivor = ClusterService(dsn, "node-b", grace=0.0, on_node_expired=flaky, **FAST)
        await survivor.start()
        deadline = time.monotonic() + 5
        while len(survivor.claimed) < 1:
            assert time.monotonic() < deadline, f"not taken over: {attempts}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert attempts == [1, 1]  # failed once, done once
        assert [lease.name for lease in survivor.claimed] == ["node-a"]
        conn = await connect(dsn, "test")
        cursor = await conn.execute("SELECT node FROM closed")
        assert await cursor.fetchall() == [("node-a",)]  # the failed attempt's row rolled back with it
        await conn.close()
        await survivor.stop()

    asyncio.run(scenario())


def test_after_a_database_outage_the_leader_claims_only_the_node_that_died_meanwhile() -> None:
    """PostgreSQL stopped for longer than ttl + grace: every lease has expired on its clock when it comes
    back, the live nodes' too. The leader waits until its own lease is unbroken for ttl + grace; by then
    the live node has renewed, so only the node that died during the outage is taken over."""
    why = pgserver.available()
    if why is not None:
        pytest.skip(f"no PostgreSQL for the tests: {why}")
    server = PostgresServer()
    server.start()

    async def scenario(dsn: str) -> None:
        taken: list[str] = []

        async def take_over(conn: Connection, lease: ExpiredLease) -> None:
            taken.append(lease.name)

        services = [
            ClusterService(dsn, name, grace=GRACE, on_node_expired=take_over, **FAST)
            for name in ("node-a", "node-b", "node-c")
        ]
        try:
            for service in services:
                await service.start()
            await asyncio.sleep(TTL + GRACE + 0.5)  # the first leader's claims are open
            # Whichever node's first try won the lock leads; a follower is the one that dies.
            leaders = [service for service in services if service.leader]
            assert len(leaders) == 1 and taken == []
            dying = next(service for service in services if not service.leader)
            live = [service for service in services if service is not dying]
            await asyncio.to_thread(server.pause)
            await dying.stop(release=False)  # dies while the database is away
            await asyncio.sleep(TTL + GRACE + 1.0)  # every lease expired for longer than the grace
            await asyncio.to_thread(server.resume)
            back = time.monotonic()
            while not taken:
                assert time.monotonic() - back < TTL + GRACE + 5, "the dead node was not taken over"
                await asyncio.sleep(0.05)
            assert time.monotonic() - back >= TTL + GRACE - 0.3  # not before the live ones could renew
            await asyncio.sleep(1.0)  # more claim rounds
            assert taken == [dying.node]
            assert all(service.lease.held and not service.lease.lost.is_set() for service in live)
            conn = await connect(dsn, "test")
            nodes = {row.name: row for row in await read_nodes(conn)}
            await conn.close()
            assert {name: (row.expired, row.claimed) for name, row in nodes.items()} == {
                service.node: (service is dying, service is dying) for service in services
            }
        finally:
            # Stopped whatever failed above: left running, their tasks hold asyncio.run's exit.
            for service in services:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(service.stop(), 10)

    try:
        asyncio.run(scenario(server.create_database("outage_claims")))
    finally:
        server.stop()


def test_a_leader_that_loses_its_lease_steps_down_and_rejoins_the_election_once_registered_again(
    dsn: str,
) -> None:
    """A second process with the leader's node name takes its lease: the leader, now without a lease (the
    others may take it for dead), must not keep the leader lock; another node leads within a couple of
    seconds. Once the twin stops, the node registers again and takes part in the election again: with
    the other node stopped it leads again. (Without the step-down node-a keeps the lock: it fails here.)"""

    async def scenario() -> None:
        leadership: list[bool] = []
        a = ClusterService(dsn, "node-a", grace=GRACE, on_leadership=leadership.append, **FAST)
        await a.start()
        deadline = time.monotonic() + 3
        while not a.leader:
            assert time.monotonic() < deadline, "node-a was not elected"
            await asyncio.sleep(0.02)
        b = ClusterService(dsn, "node-b", grace=GRACE, **FAST)
        twin = ClusterService(dsn, "node-a", grace=GRACE, **FAST)
        try:
            await b.start()
            await twin.start()  # the same node name: a newer epoch, node-a's next renewal fails
            taken = time.monotonic()
            await asyncio.wait_for(a.lease.lost.wait(), 3)
            while a.leader or not (b.leader or twin.leader):
                assert time.monotonic() - taken < 3.0, f"node-a still leads without a lease: {leadership}"
                await asyncio.sleep(0.02)
            assert leadership == [True, False]
            await twin.stop()  # the name is free: node-a registers again
            await b.stop()
            freed = time.monotonic()
            while not a.leader:
                assert time.monotonic() - freed < 5.0, "node-a did not rejoin the election"
                await asyncio.sleep(0.05)
            assert a.lease.held and leadership == [True, False, True]
        finally:
            for service in (twin, b, a):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(service.stop(), 10)

    asyncio.run(scenario())
