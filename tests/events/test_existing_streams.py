"""Streams an operator made keep their replicas: the manager says once that `<replicas>` differs, for the
status stream, its KV bucket and the agent events' stream, and publishes into them as they are."""

from __future__ import annotations

import asyncio

import nats

from tests.e2e.harness import ManagerProcess, wait_until
from tests.events.agent_events import read_events
from tests.events.fleet import Agent, nats_settings
from tests.events.natsserver import NatsServer


async def made_by_the_operator(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="AGENT_STATUS", subjects=["agent.status.>"], num_replicas=1)
        await js.add_stream(name="AGENT_EVENTS", subjects=["agent.events.>"], num_replicas=1)
        await js.create_key_value(bucket="agent_status", history=1, replicas=1)
    finally:
        await nc.close()


def test_existing_streams_keep_their_replicas_and_the_difference_is_said_once_each(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    asyncio.run(made_by_the_operator(nats_server.url))
    manager.settings = nats_settings(nats_server.url, "<replicas>3</replicas>")
    manager.settings.workers = 2  # two publishers of agent events: still one warning for their stream
    (key,) = manager.add_agents(1)
    manager.start()
    wait_until(lambda: "Status events: publishing" in manager.output(), "the status stream", timeout=20)

    async def send() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        agent.connection.send(b"1:/var/log/app.log:into the operator's stream")
        await agent.keepalive()
        agent.close()

    asyncio.run(send())
    (message,) = asyncio.run(read_events(nats_server.url, 1, settle=0.5))
    assert message.subject == "agent.events.001.logcollector"
    output = manager.output()
    for what in ("stream AGENT_STATUS", "KV bucket agent_status", "stream AGENT_EVENTS"):
        line = f"JetStream {what} has 1 replicas, <nats><replicas> asks for 3: kept as it is"
        assert output.count(line) == 1, (what, output[-3000:])
    assert "Created JetStream" not in output
