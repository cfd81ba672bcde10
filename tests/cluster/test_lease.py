"""Node leases on a real PostgreSQL: epochs, renewals, expiry seen by a survivor, claims exactly once."""

from __future__ import annotations

import asyncio
import time

import psycopg

from agentpulse.cluster.lease import (
    NodeLease,
    claim_expired,
    connect,
    ensure_schema,
    read_nodes,
    renew_interval_for,
)

INTERVAL = 0.2
TTL = 1.0


def test_a_lease_is_renewed_every_second_or_every_third_of_a_shorter_ttl() -> None:
    assert renew_interval_for(3.0) == 1.0
    assert renew_interval_for(30.0) == 1.0
    assert renew_interval_for(2.0) == 2.0 / 3


async def nodes_by_name(dsn: str) -> dict[str, object]:
    conn = await connect(dsn, "test")
    try:
        return {row.name: row for row in await read_nodes(conn)}
    finally:
        await conn.close()


def test_a_renewed_lease_stays_live_and_each_start_takes_a_new_epoch(dsn: str) -> None:
    async def scenario() -> None:
        first = NodeLease(dsn, "node-a", interval=INTERVAL, ttl=TTL)
        assert await first.start() == 1
        conn = await connect(dsn, "test")
        before = {row.name: row for row in await read_nodes(conn)}["node-a"]
        await asyncio.sleep(3 * TTL)  # well past the ttl: only the renewals keep it live
        after = {row.name: row for row in await read_nodes(conn)}["node-a"]
        assert first.held and not after.expired
        assert after.renewed > before.renewed and after.epoch == 1
        assert await claim_expired(conn) == []

        second = NodeLease(dsn, "node-a", interval=INTERVAL, ttl=TTL)  # the same name started again
        assert await second.start() == 2
        await asyncio.wait_for(first.lost.wait(), 3 * INTERVAL)
        assert not first.held and second.held
        await first.stop()
        await second.stop()
        await conn.close()

    asyncio.run(scenario())


def test_a_dead_nodes_lease_expires_for_the_survivor_and_is_claimed_exactly_once(dsn: str) -> None:
    async def scenario() -> None:
        dead = NodeLease(dsn, "node-a", interval=INTERVAL, ttl=TTL)
        survivor = NodeLease(dsn, "node-b", interval=INTERVAL, ttl=TTL)
        await dead.start()
        await survivor.start()
        await dead.stop(release=False)  # as kill -9 does: no goodbye, the row just stops moving
        killed = time.monotonic()
        claimers = [await connect(dsn, f"claimer-{n}") for n in range(3)]
        while not (await read_nodes(claimers[0]))[0].expired:
            assert time.monotonic() - killed < TTL + 1.0, "the dead node's lease did not expire"
            await asyncio.sleep(0.05)
        seen_after = time.monotonic() - killed
        assert TTL - 0.3 <= seen_after <= TTL + 1.0
        rows = {row.name: row for row in await read_nodes(claimers[0])}
        assert rows["node-a"].expired and not rows["node-b"].expired

        # Three survivors claim at once: one of them gets node-a's epoch 1, the others nothing.
        claims = await asyncio.gather(*(claim_expired(conn) for conn in claimers))
        flat = [(lease.name, lease.epoch) for claim in claims for lease in claim]
        assert flat == [("node-a", 1)]
        assert await claim_expired(claimers[0]) == []
        assert (await read_nodes(claimers[0]))[0].claimed

        # The dead node comes back: a new epoch, live again, claimable again only when it dies again.
        back = NodeLease(dsn, "node-a", interval=INTERVAL, ttl=TTL)
        assert await back.start() == 2
        assert not {row.name: row for row in await read_nodes(claimers[0])}["node-a"].expired
        for lease in (back, survivor):
            await lease.stop()
        for conn in claimers:
            await conn.close()

    asyncio.run(scenario())


def test_the_grace_delays_a_claim_and_a_claimed_holder_loses_its_lease(dsn: str) -> None:
    async def scenario() -> None:
        stalled = NodeLease(dsn, "node-a", interval=INTERVAL, ttl=TTL)
        lost: list[str] = []
        stalled.on_lost = lost.append
        await stalled.start()
        conn = await connect(dsn, "survivor")
        # A node that stops renewing (a long pause of the whole process) but is not dead: paused by hand.
        await stalled.stop_renewing()
        await asyncio.sleep(TTL + 0.2)
        assert await claim_expired(conn, grace=1.0) == []  # expired, but not yet for the grace
        await asyncio.sleep(1.0)
        assert [lease.name for lease in await claim_expired(conn, grace=1.0)] == ["node-a"]
        # It wakes up: its renewal finds the lease claimed, and it is told.
        assert await stalled.renew() is False
        stalled.start_renewing()
        await asyncio.wait_for(stalled.lost.wait(), 3 * INTERVAL)
        assert len(lost) == 1 and "took the lease" in lost[0]
        await stalled.stop(release=False)
        await conn.close()

    asyncio.run(scenario())


def test_a_clean_stop_expires_the_lease_at_once(dsn: str) -> None:
    async def scenario() -> None:
        lease = NodeLease(dsn, "node-a", interval=INTERVAL, ttl=30.0)
        await lease.start()
        await lease.stop()
        conn = await connect(dsn, "test")
        assert (await read_nodes(conn))[0].expired  # no one waits 30 s
        await conn.close()

    asyncio.run(scenario())


def test_the_schema_is_created_once_and_read_by_plain_sql(dsn: str) -> None:
    async def scenario() -> None:
        conn = await connect(dsn, "test")
        await ensure_schema(conn)
        await ensure_schema(conn)
        await conn.close()

    asyncio.run(scenario())
    with psycopg.connect(dsn) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'cluster_node' ORDER BY ordinal_position"
            )
        ]
    assert columns == ["name", "host", "epoch", "started", "renewed", "expires", "claimed_epoch"]


def test_nodes_starting_together_on_an_empty_database_all_register(dsn: str) -> None:
    """Concurrent CREATE TABLE IF NOT EXISTS can fail one session (pg_type duplicate key): the schema is
    made under an advisory lock, so every node of a cluster started at once gets its lease."""

    async def scenario() -> list[int]:
        leases = [NodeLease(dsn, f"node-{n}", interval=0.2, ttl=1.0) for n in range(6)]
        try:
            return list(await asyncio.gather(*(lease.start() for lease in leases)))
        finally:
            for lease in leases:
                await lease.stop()

    assert asyncio.run(scenario()) == [1] * 6


def test_a_node_whose_event_loop_is_blocked_past_the_ttl_keeps_its_lease(dsn: str) -> None:
    """A busy node is not a dead one: the renewals do not wait for the loop (a restart storm on a starved
    machine lagged the loop past the ttl, and the survivors took a live node's agents over)."""

    async def scenario() -> None:
        busy = NodeLease(dsn, "node-a", interval=INTERVAL, ttl=TTL)
        await busy.start()
        time.sleep(3 * TTL)  # the loop blocked, as by a long flush or a burst of handshakes
        assert busy.held and not busy.lost.is_set()
        conn = await connect(dsn, "survivor")
        assert not {row.name: row for row in await read_nodes(conn)}["node-a"].expired
        assert await claim_expired(conn) == []
        await busy.stop()
        await conn.close()

    asyncio.run(scenario())
