"""Agent events on a 3-server NATS cluster with `<replicas>3`: the AGENT_EVENTS stream is replicated, and
killing the server that leads it loses and repeats no event (the spool holds them while a leader is
elected; Nats-Msg-Id drops a republished one)."""

from __future__ import annotations

import asyncio

from agentpulse.cluster.localnats import LocalNatsCluster
from tests.e2e.harness import ManagerProcess
from tests.e2e.test_nats_cluster import stream_replicas
from tests.events.agent_events import body, read_events
from tests.events.fleet import Agent, nats_settings

EACH_SIDE = 40  # events before the kill, and as many after it


def test_agent_events_are_replicated_and_survive_the_loss_of_their_streams_leader(
    nats_cluster: LocalNatsCluster, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_cluster.url, "<replicas>3</replicas>")
    (key,) = manager.add_agents(1)
    manager.start()
    killed: list[int] = []

    async def scenario() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        for n in range(EACH_SIDE):
            agent.connection.send(b"1:/var/log/app.log:before the kill %d" % n)
        await agent.keepalive()  # acked after the events before it were handled
        await read_events(nats_cluster.urls[0], EACH_SIDE, settle=0)
        replicas, leader = await stream_replicas(nats_cluster.urls[0], "AGENT_EVENTS")
        assert replicas == 3
        victim = next(i for i in range(3) if nats_cluster.server_name(i) == leader)
        killed.append(victim)
        nats_cluster.kill(victim)
        for n in range(EACH_SIDE):
            agent.connection.send(b"1:/var/log/app.log:after the kill %d" % n)
        await agent.keepalive()  # keep-alives are acked throughout
        agent.close()

    asyncio.run(scenario())
    survivor = next(url for index, url in enumerate(nats_cluster.urls) if index not in killed)
    messages = asyncio.run(read_events(survivor, 2 * EACH_SIDE, timeout=60, settle=2.0))
    texts = [body(message)["text"] for message in messages]
    expected = [f"before the kill {n}" for n in range(EACH_SIDE)] + [
        f"after the kill {n}" for n in range(EACH_SIDE)
    ]
    assert texts == expected  # every event once, in the order the agent sent them
    assert "Created JetStream stream AGENT_EVENTS (subjects agent.events.>, 3 replicas)" in manager.output()
