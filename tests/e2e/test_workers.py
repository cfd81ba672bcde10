"""Several remoted worker processes on one port: statuses stay true, and a dead worker is replaced."""

from __future__ import annotations

import asyncio
import os
import signal

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.e2e.test_statuses import KEEPALIVE


async def _up(
    manager: ManagerProcess, key: AgentKey, counter: SenderCounter | None = None
) -> AgentConnection:
    codec = AgentCodec(key, counter=counter or SenderCounter())  # a reconnecting agent's count goes on
    connection = await AgentConnection.open(codec, LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive() == control.Ack()
    connection.send(KEEPALIVE)
    assert await connection.receive() == control.Ack()
    return connection


def _worker_pids(manager: ManagerProcess) -> list[int]:
    assert manager.process is not None
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == manager.process.pid:
            children.append(int(entry))
    return children


def test_two_workers_serve_every_status(manager: ManagerProcess) -> None:
    manager.settings.workers = 2
    keys = manager.add_agents(40)
    manager.start()
    assert len(_worker_pids(manager)) == 2

    async def scenario() -> None:
        connections = [await _up(manager, key) for key in keys]
        await manager.reach_all("active", 40)
        connections[0].send(control.SHUTDOWN)
        await manager.reach(keys[0].number, "disconnected", 3)
        connections[1].abort()
        await manager.reach(keys[1].number, "disconnected", 6, timeout=5)
        for connection in connections[2:]:
            connection.close()

    asyncio.run(scenario())
    assert manager.history(keys[0].number) == [
        ("never_connected", "pending", 0),
        ("pending", "active", 0),
        ("active", "disconnected", 3),
    ]


def test_killed_worker_is_restarted_and_agents_that_return_in_the_grace_never_disconnect(
    manager: ManagerProcess,
) -> None:
    manager.settings.workers = 2
    manager.settings.connection_grace = 5.0
    keys = manager.add_agents(30)
    manager.start()

    async def scenario() -> None:
        connections = [await _up(manager, key) for key in keys]
        await manager.reach_all("active", 30)
        victim = _worker_pids(manager)[0]
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.5)  # the kernel closes the dead worker's sockets at once
        dropped = [connection.closed.is_set() for connection in connections]
        assert 0 < sum(dropped) < len(keys)
        alive = await asyncio.gather(
            *(
                _reconnect(manager, key, connection.codec.counter) if closed else _same(connection)
                for key, connection, closed in zip(keys, connections, dropped, strict=True)
            )
        )
        await asyncio.sleep(manager.settings.connection_grace + 1)
        for connection in alive:
            connection.send(KEEPALIVE)
            assert await connection.receive() == control.Ack()
        for connection in alive:
            connection.close()

    asyncio.run(scenario())
    assert len(_worker_pids(manager)) == 2
    assert "remoted worker" in manager.output() and "restarting" in manager.output()
    for key in keys:
        history = manager.history(key.number)
        assert all(to != "disconnected" for _, to, _ in history), (key.id, history, manager.output()[-4000:])


async def _same(connection: AgentConnection) -> AgentConnection:
    return connection


async def _reconnect(manager: ManagerProcess, key: AgentKey, counter: SenderCounter) -> AgentConnection:
    for _ in range(50):
        try:
            return await _up(manager, key, counter)
        except (ConnectionError, AssertionError, OSError):
            await asyncio.sleep(0.1)
    raise AssertionError(f"agent {key.id} could not reconnect")
