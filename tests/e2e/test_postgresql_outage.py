"""A manager on PostgreSQL while PostgreSQL is stopped (pg_ctl stop, then start): agents keep getting their
acks, status changes made meanwhile wait in memory and are all written once it is back, the log says so once
each way; and a manager whose PostgreSQL cannot be reached refuses to start with one clear line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests import pgserver
from tests.e2e.harness import ManagerProcess
from tests.events.fleet import connect_all
from tests.pgserver import PostgresServer

AGENTS = 30
OUTAGE = 8.0  # seconds (the multi-node test asks 20; one node's writer does the same either way)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    why = pgserver.available()
    if why is not None:
        pytest.skip(f"no PostgreSQL for the tests: {why}")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_postgresql_stopped_acks_go_on_and_nothing_is_lost(
    manager: ManagerProcess, own_postgres: PostgresServer
) -> None:
    manager.use_postgresql(own_postgres.dsn())
    keys = manager.add_agents(AGENTS)
    manager.start()

    async def scenario() -> float:
        agents = await connect_all(manager, keys)
        await asyncio.gather(*(agent.startup() for agent in agents))
        await asyncio.gather(*(agent.keepalive() for agent in agents))
        await manager.reach_all("active", AGENTS, timeout=30)
        await asyncio.to_thread(own_postgres.pause)
        slowest = 0.0
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:  # keep-alives while the database is away: each one acked
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(agent.keepalive() for agent in agents)), 10)
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.5)
        for agent in agents[: AGENTS // 2]:
            agent.shutdown()
        await asyncio.sleep(1.5)  # the shutdowns are accepted and wait in the batch
        await asyncio.to_thread(own_postgres.resume)
        await manager.reach_all("disconnected", AGENTS // 2, timeout=30)
        for agent in agents:
            agent.close()
        return slowest

    slowest = asyncio.run(scenario())
    assert slowest < 2.0  # a round of 30 acks, on a loaded machine, never waiting for the database
    for number in range(1, AGENTS // 2 + 1):
        assert manager.history(number) == [
            ("never_connected", "pending", 0),
            ("pending", "active", 0),
            ("active", "disconnected", 3),
        ]
    output = manager.output()
    assert output.count("holding status changes in memory") == 1, output[-3000:]
    assert output.count("database writes work again") == 1


def test_a_manager_whose_postgresql_is_unreachable_refuses_to_start(manager: ManagerProcess) -> None:
    manager.use_postgresql(f"postgresql://agentpulse:secret@127.0.0.1:{pgserver.free_port()}/none")
    manager.add_agents(1)
    with pytest.raises(RuntimeError) as failed:
        manager.start()
    assert "Cannot start: PostgreSQL" in str(failed.value) and "cannot connect or migrate" in str(
        failed.value
    )
    assert "secret" not in manager.output()
