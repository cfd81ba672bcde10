"""The leader election on a real PostgreSQL: one leader; when its session or its process dies, another node
leads within 2 s, and the old leader knows it no longer does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
import uuid

import pytest

from agentpulse.cluster.leader import LeaderElection, lock_holder
from agentpulse.cluster.lease import connect
from tests.pgserver import PostgresServer

TAKEOVER = 2.0  # the bound: a new leader within 2 s

LEADER_SCRIPT = """
import asyncio, sys
from agentpulse.cluster.leader import LeaderElection

async def main():
    election = LeaderElection(sys.argv[1], "node-child", on_elected=lambda: print("elected", flush=True))
    election.start()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def wait_leader(election: LeaderElection, timeout: float) -> float:
    start = time.monotonic()
    while not election.leader:
        remaining = timeout - (time.monotonic() - start)
        assert remaining > 0, f"{election.node} was not elected within {timeout} s"
        election.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(election.changed.wait(), remaining)
    return time.monotonic() - start


def test_one_leader_and_a_takeover_within_two_seconds_when_its_session_dies(dsn: str) -> None:
    async def scenario() -> None:
        lost: list[str] = []
        first = LeaderElection(dsn, "node-a", on_lost=lost.append)
        second = LeaderElection(dsn, "node-b")
        first.start()
        await wait_leader(first, 5.0)
        second.start()
        await asyncio.sleep(1.5)  # three of its tries: the lock is taken
        assert first.leader and not second.leader
        admin = await connect(dsn, "admin")
        holder = await lock_holder(admin)
        assert holder is not None and holder.node == "node-a"

        # The leader's database session dies (a crashed backend, a cut connection).
        await admin.execute("SELECT pg_terminate_backend(%s)", (holder.pid,))
        took = await wait_leader(second, TAKEOVER)
        assert took < TAKEOVER
        deadline = time.monotonic() + TAKEOVER
        while first.leader:  # the old leader steps down at its next session check
            assert time.monotonic() < deadline, "the old leader did not notice"
            await asyncio.sleep(0.05)
        assert len(lost) == 1 and "session failed" in lost[0]
        holder = await lock_holder(admin)
        assert holder is not None and holder.node == "node-b"
        await asyncio.sleep(1.0)  # node-a keeps trying and keeps failing: one leader
        assert second.leader and not first.leader

        await second.stop()  # a clean stop unlocks: node-a leads at its next try
        await wait_leader(first, TAKEOVER)
        assert first.terms == 2
        await first.stop()
        assert await lock_holder(admin) is None
        await admin.close()

    asyncio.run(scenario())


def test_a_leader_in_another_database_of_the_same_server_is_not_ours(
    dsn: str, postgres: PostgresServer
) -> None:
    """Advisory locks are per database but pg_locks lists every database's: two clusters sharing one
    server (or a node left over from an earlier test) must not see each other's leader."""
    other = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")

    async def scenario() -> None:
        elsewhere = LeaderElection(other, "node-elsewhere")
        elsewhere.start()
        await wait_leader(elsewhere, 5.0)
        admin = await connect(dsn, "admin")
        assert await lock_holder(admin) is None
        ours = LeaderElection(dsn, "node-ours")
        ours.start()
        await wait_leader(ours, 5.0)  # the same key, another database: not taken
        holder = await lock_holder(admin)
        assert holder is not None and holder.node == "node-ours"
        await ours.stop()
        await elsewhere.stop()
        await admin.close()

    asyncio.run(scenario())


def test_a_leader_killed_with_sigkill_is_replaced_within_two_seconds(dsn: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", LEADER_SCRIPT, dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "elected"

        async def scenario() -> float:
            survivor = LeaderElection(dsn, "node-b")
            survivor.start()
            await asyncio.sleep(1.0)
            assert not survivor.leader
            admin = await connect(dsn, "admin")
            holder = await lock_holder(admin)
            assert holder is not None and holder.node == "node-child"
            child.kill()
            killed = time.monotonic()
            await asyncio.to_thread(child.wait, 10)
            await wait_leader(survivor, TAKEOVER)
            took = time.monotonic() - killed
            holder = await lock_holder(admin)
            assert holder is not None and holder.node == "node-b"
            await survivor.stop()
            await admin.close()
            return took

        assert asyncio.run(scenario()) < TAKEOVER
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_database_that_cannot_be_reached_elects_no_one_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> LeaderElection:
        election = LeaderElection("postgresql://postgres@127.0.0.1:1/none", "node-a", interval=0.1)
        election.start()
        await asyncio.sleep(1.0)
        await election.stop()
        return election

    with caplog.at_level(logging.WARNING, logger="agentpulse.cluster.leader"):
        election = asyncio.run(scenario())
    assert not election.leader and election.terms == 0
    assert sum("cannot reach the database" in record.message for record in caplog.records) == 1
