"""100 agents against a real manager and a real nats-server: every event arrives, in each agent's order."""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.js import api as js_api
from nats.js.errors import NoKeysError

from tests.e2e.harness import ManagerProcess
from tests.events.fleet import (
    Agent,
    Collector,
    as_history,
    connect_all,
    history_by_agent,
    nats_client,
    nats_settings,
    per_agent,
    read_stream,
)
from tests.events.natsserver import NatsServer

AGENTS = 100
KEEPALIVES = 3


def test_every_keepalive_and_exactly_the_recorded_transitions_arrive_in_order(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_server.url)
    keys = manager.add_agents(AGENTS)
    manager.start()

    async def scenario() -> Collector:
        async with Collector(nats_server.url) as events:
            agents = await connect_all(manager, keys)
            await asyncio.gather(*(agent.startup() for agent in agents))
            for _ in range(KEEPALIVES):
                await asyncio.gather(*(agent.keepalive() for agent in agents))
            for agent in agents:
                agent.shutdown()
            await manager.reach_all("disconnected", AGENTS)
            await events.wait_for(statuses=3 * AGENTS, keepalives=KEEPALIVES * AGENTS)
            for agent in agents:
                agent.close()
            return events

    events = asyncio.run(scenario())
    history = history_by_agent(manager)
    assert len(history) == AGENTS
    assert {agent: as_history(seen) for agent, seen in events.status.items()} == history
    for agent, seen in events.keepalive.items():
        assert [event["sequence"] for event in seen] == list(range(1, KEEPALIVES + 1)), agent
        assert {event["status"] for event in seen} == {"active"}
    assert len(events.keepalive) == AGENTS
    stream = per_agent(asyncio.run(read_stream(nats_server.url, at_least=3 * AGENTS)))
    assert {agent: as_history(seen) for agent, seen in stream.items()} == history

    first = events.status[f"{keys[0].number:03d}"][0]
    assert first["name"] == keys[0].name
    assert first["reason"] == "none"
    assert first["at_iso"].endswith("Z")

    async def snapshot() -> dict[str, dict[str, object]]:
        """The bucket once it holds every agent's last status: its puts follow the events (bounded wait)."""
        nc = await nats_client(nats_server.url)
        try:
            kv = await nc.jetstream().key_value("agent_status")
            values: dict[str, dict[str, object]] = {}
            for _ in range(100):
                with contextlib.suppress(NoKeysError):
                    values = {key: json.loads((await kv.get(key)).value or b"{}") for key in await kv.keys()}
                if len(values) == AGENTS and all(value.get("sequence") == 3 for value in values.values()):
                    break
                await asyncio.sleep(0.1)
            return values
        finally:
            await nc.close()

    kv = asyncio.run(snapshot())
    assert {key: (value["status"], value["status_code"], value["sequence"]) for key, value in kv.items()} == {
        agent: ("disconnected", 3, 3) for agent in history
    }


def test_an_existing_stream_keeps_the_operators_settings_and_gains_our_subject(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    async def create() -> None:
        nc = await nats_client(nats_server.url)
        try:
            await nc.jetstream().add_stream(
                name="AGENT_STATUS", subjects=["audit.>"], max_msgs=5000, duplicate_window=600.0
            )
        finally:
            await nc.close()

    async def config() -> js_api.StreamConfig:
        nc = await nats_client(nats_server.url)
        try:
            return (await nc.jetstream().stream_info("AGENT_STATUS")).config
        finally:
            await nc.close()

    asyncio.run(create())
    manager.settings = nats_settings(nats_server.url)
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        agent.close()

    asyncio.run(scenario())
    (message,) = asyncio.run(read_stream(nats_server.url, at_least=1))
    assert message.subject == f"agent.status.{key.number:03d}"
    stream = asyncio.run(config())
    assert (stream.subjects, stream.max_msgs, stream.duplicate_window) == (
        ["audit.>", "agent.status.>"],
        5000,
        600.0,
    )


def test_keepalive_events_none_publishes_status_events_only(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_server.url, "<keepalive_events>none</keepalive_events>")
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> Collector:
        async with Collector(nats_server.url) as events:
            agent = await Agent.connect(manager, key)
            await agent.startup()
            await agent.keepalive()
            await agent.keepalive()
            await events.wait_for(statuses=2, keepalives=0)
            await asyncio.sleep(0.3)  # six keep-alive batch intervals: nothing may come
            agent.close()
            return events

    events = asyncio.run(scenario())
    assert events.counts() == (2, 0)
