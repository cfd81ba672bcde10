"""Acknowledged but not stored (issue 17, item 7): a manager killed between its fast ack and the store's
commit must not leave an agent it told "connected" looking never connected. remoted journals each ack
before sending it; the next start restores what the database lacks, and the reset then marks it (code 5).
"""

from __future__ import annotations

import asyncio

import pytest

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.e2e.test_statuses import KEEPALIVE

RAMP = 300
CONCURRENT = 100
SLOW_FLUSH = 10.0  # the longest flush_interval allowed: the kill lands well inside it
MARKED = [("never_connected", "pending", 0), ("pending", "disconnected", 5)]


async def _startup(manager: ManagerProcess, key: AgentKey, gate: asyncio.Semaphore) -> AgentConnection | None:
    """Connect and send a startup; the connection if the manager acked it."""
    async with gate:
        connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
        connection.send(control.build_startup("v4.14.7"))
        reply = await connection.receive(10)
    if reply == control.Ack():
        return connection
    connection.close()
    return None


async def _ramp(manager: ManagerProcess, keys: list[AgentKey]) -> list[int]:
    """Every agent starts up, as fast as the manager acks; then the manager is killed (connections open)."""
    gate = asyncio.Semaphore(CONCURRENT)
    connections = await asyncio.gather(*(_startup(manager, key, gate) for key in keys))
    acked = [key.number for key, connection in zip(keys, connections, strict=True) if connection is not None]
    manager.kill()
    for connection in connections:
        if connection is not None:
            connection.close()
    return acked


def _speak_again(manager: ManagerProcess, keys: list[AgentKey]) -> None:
    async def scenario() -> None:
        for key in keys:
            connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
            connection.send(control.build_startup("v4.14.7"))
            assert await connection.receive() == control.Ack()
            connection.send(KEEPALIVE)
            assert await connection.receive() == control.Ack()
            connection.close()

    asyncio.run(scenario())
    for key in keys:
        manager.wait_for(key.number, "active")


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_during_a_ramp_loses_no_acknowledged_startup(manager: ManagerProcess, workers: int) -> None:
    manager.settings.workers = workers
    manager.settings.flush_interval = SLOW_FLUSH
    keys = manager.add_agents(RAMP)
    manager.start()
    acked = asyncio.run(_ramp(manager, keys))
    assert len(acked) == RAMP
    statuses = manager.statuses()
    unstored = [agent for agent in acked if statuses[agent] == ("never_connected", 0)]
    assert unstored  # the kill did land between the acks and the commit (all of them, unless very slow)

    manager.settings.flush_interval = 0.1
    manager.start()
    for agent in acked:
        assert manager.status(agent) == ("disconnected", 5), (agent, manager.output()[-3000:])
        assert manager.history(agent) == MARKED, agent
    assert f"{len(unstored)} agents were acknowledged in the last run but not stored" in manager.output()

    # When they next speak, their history goes on from the mark.
    _speak_again(manager, keys[:5])
    for key in keys[:5]:
        assert manager.history(key.number) == [
            *MARKED,
            ("disconnected", "pending", 0),
            ("pending", "active", 0),
        ]


def test_a_udp_agent_acked_for_a_keepalive_alone_is_restored(manager: ManagerProcess) -> None:
    """UDP agents go on with keep-alives across a manager restart, without a startup: the first one a
    remoted process acks is journaled too."""
    manager.settings.protocols = "udp"
    manager.settings.flush_interval = SLOW_FLUSH
    keys = manager.add_agents(3)
    manager.start()

    async def keepalives() -> None:
        for key in keys:
            connection = await AgentConnection.open(AgentCodec(key, tcp=False), LOOPBACK, manager.port)
            connection.send(KEEPALIVE)
            assert await connection.receive(5) == control.Ack()
            connection.close()

    asyncio.run(keepalives())
    manager.kill()
    assert all(status == ("never_connected", 0) for status in manager.statuses().values())

    manager.settings.flush_interval = 0.1
    manager.start()
    for key in keys:
        assert manager.history(key.number) == [
            ("never_connected", "active", 0),
            ("active", "disconnected", 5),
        ]


def test_an_acked_agent_whose_journal_was_lost_gets_its_row_when_it_next_speaks(
    manager: ManagerProcess,
) -> None:
    """The residue the journal cannot cover (a machine crash that lost its last second): the agent looks
    never connected until its next message, which then writes its history row."""
    manager.settings.flush_interval = SLOW_FLUSH
    keys = manager.add_agents(5)
    manager.start()
    acked = asyncio.run(_ramp(manager, keys))
    assert len(acked) == len(keys)
    for journal in manager.home.ack_journal_dir.iterdir():
        journal.unlink()

    manager.settings.flush_interval = 0.1
    manager.start()
    assert all(manager.history(key.number) == [] for key in keys)
    _speak_again(manager, keys)
    for key in keys:
        assert manager.history(key.number) == [("never_connected", "pending", 0), ("pending", "active", 0)]
