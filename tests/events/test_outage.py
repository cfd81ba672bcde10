"""A 30 s NATS outage while 200 agents change status: every transition reaches the stream exactly once."""

from __future__ import annotations

import asyncio
import time

from tests.e2e.harness import ManagerProcess
from tests.events.fleet import (
    Collector,
    as_history,
    connect_all,
    history_by_agent,
    nats_settings,
    per_agent,
    read_stream,
)
from tests.events.natsserver import NatsServer

AGENTS = 200
OUTAGE = 30.0


def test_outage_delays_status_events_without_losing_or_repeating_one(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_server.url)
    keys = manager.add_agents(AGENTS)
    manager.start()

    async def scenario() -> int:
        async with Collector(nats_server.url) as events:
            agents = await connect_all(manager, keys)
            await asyncio.gather(*(agent.startup() for agent in agents))
            await asyncio.gather(*(agent.keepalive() for agent in agents))
            await events.wait_for(statuses=2 * AGENTS, keepalives=AGENTS)

            nats_server.stop()
            down = time.monotonic()
            for agent in agents:
                agent.shutdown()
            await manager.reach_all("disconnected", AGENTS)
            await asyncio.sleep(OUTAGE / 3)
            # The manager keeps serving agents while NATS is away: every startup and keep-alive is acked.
            await asyncio.gather(*(agent.startup() for agent in agents))
            await asyncio.gather(*(agent.keepalive() for agent in agents))
            await manager.reach_all("active", AGENTS)
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
            nats_server.start()

            # Keep-alive events resume without a manager restart.
            before = events.counts()[1]
            deadline = time.monotonic() + 20
            while events.counts()[1] < before + AGENTS:
                assert time.monotonic() < deadline, f"keep-alive events did not resume: {events.counts()}"
                await asyncio.gather(*(agent.keepalive() for agent in agents))
                await asyncio.sleep(0.5)
            for agent in agents:
                agent.close()
            return sum(agent.keepalives for agent in agents)

    asyncio.run(scenario())
    history = history_by_agent(manager)
    assert sum(map(len, history.values())) == 5 * AGENTS
    messages = asyncio.run(read_stream(nats_server.url, at_least=5 * AGENTS, timeout=30))
    assert len(messages) == 5 * AGENTS  # nothing stored twice
    stream = per_agent(messages)
    for agent, rows in history.items():
        assert as_history(stream[agent]) == rows, agent
        assert [event["sequence"] for event in stream[agent]] == list(range(1, 6)), agent

    output = manager.output()
    assert output.count("Status events held in the outbox") == 1
    assert output.count("Status events flowing again") == 1
    assert output.count("Keep-alive events dropped") == 1
