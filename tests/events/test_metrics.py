"""The events' metrics of a real manager on a real nats-server: the connection state, what was published,
and the outbox depth through an outage."""

from __future__ import annotations

import asyncio

from tests.e2e.harness import ManagerProcess, free_port
from tests.e2e.test_metrics import eventually, metrics_section, value
from tests.events.fleet import Collector, connect_all, nats_settings
from tests.events.natsserver import NatsServer

AGENTS = 10


def test_published_events_and_the_outbox_depth_through_an_outage(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    port = free_port()
    manager.settings = nats_settings(nats_server.url, sections=metrics_section(port))
    keys = manager.add_agents(AGENTS)
    manager.start()

    async def scenario() -> None:
        async with Collector(nats_server.url) as events:
            agents = await connect_all(manager, keys)
            await asyncio.gather(*(agent.startup() for agent in agents))
            await asyncio.gather(*(agent.keepalive() for agent in agents))
            await events.wait_for(statuses=2 * AGENTS, keepalives=AGENTS)
            up = eventually(
                port,
                "every status event acknowledged",
                lambda s: value(s, "agentpulse_events_published_total", kind="status") == 2 * AGENTS,
            )
            assert value(up, "agentpulse_nats_connected") == 1
            assert value(up, "agentpulse_outbox_depth") == 0
            assert value(up, "agentpulse_events_published_total", kind="keepalive") >= AGENTS
            assert value(up, "agentpulse_nats_publish_seconds_count", kind="status") >= 1
            assert value(up, "agentpulse_nats_publish_seconds_count", kind="keepalive") >= 1

            nats_server.stop()
            for agent in agents:
                agent.shutdown()
            await manager.reach_all("disconnected", AGENTS)
            held = eventually(
                port,
                "the shutdowns held in the outbox",
                lambda s: (
                    value(s, "agentpulse_nats_connected") == 0
                    and value(s, "agentpulse_outbox_depth") == AGENTS
                ),
            )
            assert value(held, "agentpulse_events_published_total", kind="status") == 2 * AGENTS

            nats_server.start()
            back = eventually(
                port,
                "the outbox drained after the outage",
                lambda s: (
                    value(s, "agentpulse_outbox_depth") == 0 and value(s, "agentpulse_nats_connected") == 1
                ),
                timeout=20,
            )
            assert value(back, "agentpulse_events_published_total", kind="status") == 3 * AGENTS
            for agent in agents:
                agent.close()

    asyncio.run(scenario())
