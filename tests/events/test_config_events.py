"""`agent.config.<id>` on a real nats-server: `synced` once an agent's keep-alive reports its group's
merged.mg md5, `not synced` when it reports another (a new agent starts `not synced`: no event for that).
Pushes are off (the harness default), so the wire-level agent reads only acks."""

from __future__ import annotations

import asyncio
import json

from nats.aio.msg import Msg

from agentpulse.wire import control
from tests.e2e.harness import ManagerProcess
from tests.events.fleet import Agent, nats_client, nats_settings
from tests.events.natsserver import NatsServer

DEFAULT_MD5 = "ca35f9148a3273413eccb79f149f4757"
UNAME = "Linux |h |6.1 |#1 |x86_64 - Wazuh v4.14.7"


def test_a_config_status_change_is_an_event_on_the_config_subject(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_server.url)
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> list[tuple[str, dict[str, object]]]:
        seen: list[tuple[str, dict[str, object]]] = []

        async def collect(msg: Msg) -> None:
            seen.append((msg.subject, json.loads(msg.data)))

        nc = await nats_client(nats_server.url)
        await nc.subscribe("agent.config.*", cb=collect)
        await nc.flush()
        agent = await Agent.connect(manager, key)
        await agent.startup()
        for md5 in (None, DEFAULT_MD5, DEFAULT_MD5, None):
            agent.connection.send(control.build_keepalive(UNAME, merged_sum=md5))
            assert await agent.connection.receive() == control.Ack()
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # nothing more comes
        agent.close()
        await nc.close()
        return seen

    seen = asyncio.run(scenario())
    assert [(subject, event["group_config_status"]) for subject, event in seen] == [
        (f"agent.config.{key.number:03d}", "synced"),
        (f"agent.config.{key.number:03d}", "not synced"),
    ]
    assert seen[0][1]["name"] == key.name and seen[0][1]["type"] == "config"
