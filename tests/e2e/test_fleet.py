"""A thousand agents at once over TCP: all Active within 5 s of their keep-alives, all listed."""

from __future__ import annotations

import asyncio
import subprocess
import time

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from tests.e2e.harness import LOOPBACK, ManagerProcess, run_cli
from tests.e2e.test_statuses import KEEPALIVE

FLEET = 1000


def test_thousand_concurrent_agents_are_all_active_and_listed(manager: ManagerProcess) -> None:
    keys = manager.add_agents(FLEET)
    manager.start()

    async def agent(key_index: int) -> AgentConnection:
        connection = await AgentConnection.open(AgentCodec(keys[key_index]), LOOPBACK, manager.port)
        connection.send(control.build_startup("v4.14.7"))
        assert await connection.receive(timeout=30) == control.Ack()
        return connection

    async def scenario() -> tuple[float, subprocess.CompletedProcess[str]]:
        connections = await asyncio.gather(*(agent(index) for index in range(FLEET)))
        for connection in connections:
            connection.send(KEEPALIVE)
        sent = time.monotonic()
        replies = await asyncio.gather(*(connection.receive(timeout=30) for connection in connections))
        assert replies == [control.Ack()] * FLEET
        await manager.reach_all("active", FLEET, timeout=5)
        took = time.monotonic() - sent
        # Listed while the agents are still connected: after they close, the grace would expire.
        listing = await asyncio.to_thread(run_cli, "agent_control", "-lc", home=manager.root)
        for connection in connections:
            connection.close()
        return took, listing

    took, listing = asyncio.run(scenario())
    assert took < 5.0
    assert listing.returncode == 0
    lines = [
        line for line in listing.stdout.splitlines() if line.startswith("   ID: ") and "(server)" not in line
    ]
    assert len(lines) == FLEET
    assert all(line.endswith(", Active") for line in lines)
