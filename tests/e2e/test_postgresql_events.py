"""Status events from a manager on PostgreSQL: the outbox relay reads and acks `event_outbox` in PostgreSQL;
events held there while NATS is down survive a SIGKILL and are delivered, in order, by the next run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.e2e.harness import ManagerProcess
from tests.events.fleet import (
    as_history,
    connect_all,
    history_by_agent,
    nats_settings,
    per_agent,
    read_stream,
)
from tests.events.natsserver import NatsServer
from tests.pgserver import PostgresServer

AGENTS = 20


def outbox_size(manager: ManagerProcess) -> int:
    return int(manager.query("SELECT COUNT(*) FROM event_outbox")[0][0])


def test_events_held_in_the_postgresql_outbox_survive_sigkill(
    tmp_path: Path, manager: ManagerProcess, postgres: PostgresServer
) -> None:
    nats_server = NatsServer(tmp_path / "nats" / "store")  # not started: NATS is down during the first run
    manager.settings = nats_settings(nats_server.url)
    manager.use_postgresql(postgres.create_database("e2e_events"))
    keys = manager.add_agents(AGENTS)
    manager.start()

    async def first_run() -> None:
        agents = await connect_all(manager, keys)
        await asyncio.gather(*(agent.startup() for agent in agents))
        await asyncio.gather(*(agent.keepalive() for agent in agents))
        for agent in agents[: AGENTS // 2]:
            agent.shutdown()
        await manager.reach_all("disconnected", AGENTS // 2)
        deadline = time.monotonic() + 10
        while outbox_size(manager) < 2 * AGENTS + AGENTS // 2:
            assert time.monotonic() < deadline, outbox_size(manager)
            await asyncio.sleep(0.05)
        for agent in agents:
            agent.close()

    asyncio.run(first_run())
    manager.kill()
    try:
        nats_server.start()
        manager.start()  # resets the AGENTS // 2 live agents: code 5, more events
        history = history_by_agent(manager)
        total = sum(map(len, history.values()))
        assert total == 3 * AGENTS
        messages = asyncio.run(read_stream(nats_server.url, at_least=total))
        assert len(messages) == total
        assert {agent: as_history(events) for agent, events in per_agent(messages).items()} == history
        deadline = time.monotonic() + 10
        while outbox_size(manager):  # acknowledged rows are deleted from PostgreSQL
            assert time.monotonic() < deadline, f"{outbox_size(manager)} rows left in the outbox"
            time.sleep(0.1)
    finally:
        manager.stop()
        nats_server.stop()
