"""A real manager and wire-level agents: every status of docs/operations.md, seen in global.db."""

from __future__ import annotations

import asyncio
import signal

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.keys import AgentKey
from agentpulse.wire.secure import CipherKind
from tests.e2e.harness import LOOPBACK, ManagerProcess, wait_until

KEEPALIVE = control.build_keepalive(
    "Linux |e2e-host |6.1.0-18-amd64 |#1 SMP Debian 6.1.76-1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)]"
    " - Wazuh v4.14.7",
    merged_sum="4a8724b20dee0124ff9656783c490c4e",
    labels=(('"env"', "prod"),),
    agent_ip="127.0.0.1",
    config_sum="ab73af41699f13fdd81903b5f23d8d00",
)


async def connect(
    manager: ManagerProcess,
    key: AgentKey,
    cipher: CipherKind = CipherKind.AES,
    counter: SenderCounter | None = None,
) -> AgentConnection:
    """A new connection; pass the counter of an earlier one to reconnect as the same agent process would
    (its count goes on: a fresh one starting at 0:1 is a reinstalled agent, and is challenged)."""
    codec = AgentCodec(key, cipher, counter or SenderCounter())
    return await AgentConnection.open(codec, LOOPBACK, manager.port)


async def handshake(connection: AgentConnection, version: str = "v4.14.7") -> control.FromManager | None:
    connection.send(control.build_startup(version))
    reply = await connection.receive()
    assert not isinstance(reply, Exception)
    return reply


def test_startup_keepalive_shutdown_walk_through_pending_active_disconnected(manager: ManagerProcess) -> None:
    (key,) = manager.add_agents(1)
    manager.start()
    assert manager.status(key.number) == ("never_connected", 0)

    async def scenario() -> None:
        connection = await connect(manager)
        assert await handshake(connection) == control.Ack()
        await manager.reach(key.number, "pending", 0)
        connection.send(KEEPALIVE)
        assert await connection.receive() == control.Ack()
        await manager.reach(key.number, "active", 0)
        connection.send(control.SHUTDOWN)
        await manager.reach(key.number, "disconnected", 3)
        connection.close()

    async def connect(manager: ManagerProcess) -> AgentConnection:
        return await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)

    asyncio.run(scenario())
    row = manager.query("SELECT * FROM agent WHERE id = ?", key.number)[0]
    assert row["os_name"] == "Debian GNU/Linux"
    assert row["os_version"] == "12"
    assert row["os_codename"] == "bookworm"
    assert row["os_arch"] == "x86_64"
    assert row["version"] == "Wazuh v4.14.7"
    assert row["merged_sum"] == "4a8724b20dee0124ff9656783c490c4e"
    assert row["ip"] == "127.0.0.1"
    assert row["disconnection_time"] > 0
    assert manager.history(key.number) == [
        ("never_connected", "pending", 0),
        ("pending", "active", 0),
        ("active", "disconnected", 3),
    ]
    labels = dict(manager.query("SELECT key, value FROM labels WHERE id = ?", key.number))
    assert labels['"env"'] == "prod"
    assert labels['#"_agent_ip"'] == "127.0.0.1"


def test_blowfish_agent_gets_replies_in_blowfish(manager: ManagerProcess) -> None:
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        connection = await connect(manager, key, CipherKind.BLOWFISH)
        assert await handshake(connection) == control.Ack()
        connection.send(KEEPALIVE)
        assert await connection.receive() == control.Ack()
        connection.close()

    asyncio.run(scenario())
    manager.wait_for(key.number, "active")


def test_dropped_socket_is_disconnected_code_6_after_the_grace(manager: ManagerProcess) -> None:
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> float:
        connection = await connect(manager, key)
        await handshake(connection)
        connection.send(KEEPALIVE)
        await connection.receive()
        await manager.reach(key.number, "active")
        connection.abort()
        return await manager.reach(key.number, "disconnected", 6, timeout=5)

    took = asyncio.run(scenario())
    assert 0.8 <= took <= manager.settings.connection_grace + 1.0


def test_reconnect_within_the_grace_never_shows_disconnected(manager: ManagerProcess) -> None:
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        first = await connect(manager, key)
        await handshake(first)
        first.send(KEEPALIVE)
        await first.receive()
        first.abort()
        await asyncio.sleep(0.3)
        second = await connect(manager, key, counter=first.codec.counter)
        assert await handshake(second) == control.Ack()
        second.send(KEEPALIVE)
        assert await second.receive() == control.Ack()
        await asyncio.sleep(manager.settings.connection_grace + 0.5)
        second.close()

    asyncio.run(scenario())
    assert all(to != "disconnected" for _, to, _ in manager.history(key.number)[:4])


def test_newer_agent_version_is_refused_with_code_1_and_no_ack(manager: ManagerProcess) -> None:
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        connection = await connect(manager, key)
        reply = await handshake(connection, "v9.0.0")
        assert reply == control.ErrorReply(control.ERR_NEWER_VERSION)
        connection.close()

    asyncio.run(scenario())
    manager.wait_for(key.number, "never_connected", 1)
    assert manager.query("SELECT version FROM agent WHERE id = ?", key.number)[0][0] == "Wazuh v9.0.0"


def test_a_newer_patch_release_is_acked_and_a_newer_minor_release_refused(manager: ManagerProcess) -> None:
    """Only major.minor count (reference section 4): v4.14.8 against v4.14.7 is fine, v4.15.0 is not."""
    patch, minor = manager.add_agents(2)
    manager.start()

    async def scenario() -> None:
        connection = await connect(manager, patch)
        assert await handshake(connection, "v4.14.8") == control.Ack()
        connection.close()
        connection = await connect(manager, minor)
        assert await handshake(connection, "v4.15.0") == control.ErrorReply(control.ERR_NEWER_VERSION)
        connection.close()

    asyncio.run(scenario())
    wait_until(
        lambda: ("never_connected", "pending", 0) in manager.history(patch.number), "the v4.14.8 startup"
    )
    manager.wait_for(minor.number, "never_connected", 1)


def test_startup_without_version_is_refused_with_code_2(manager: ManagerProcess) -> None:
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        connection = await connect(manager, key)
        connection.send(b'#!-agent startup {"name":"x"}')
        assert await connection.receive() == control.ErrorReply(control.ERR_NO_VERSION)
        connection.close()

    asyncio.run(scenario())
    manager.wait_for(key.number, "never_connected", 2)


def test_manager_restart_resets_live_agents_with_code_5_then_they_return(manager: ManagerProcess) -> None:
    keys = manager.add_agents(3)
    manager.start()

    async def bring_up() -> list[AgentConnection]:
        connections = []
        for key in keys:
            connection = await connect(manager, key)
            await handshake(connection)
            connection.send(KEEPALIVE)
            await connection.receive()
            connections.append(connection)
        return connections

    async def first_run() -> None:
        connections = await bring_up()
        await manager.reach_all("active", 3)
        manager.stop()
        for connection in connections:
            assert await connection.receive() is None  # the manager closed the socket

    asyncio.run(first_run())
    manager.start()
    assert {manager.status(key.number) for key in keys} == {("disconnected", 5)}

    async def second_run() -> None:
        connections = await bring_up()
        await manager.reach_all("active", 3)
        for connection in connections:
            connection.close()

    asyncio.run(second_run())
    assert manager.history(keys[0].number)[-3:] == [
        ("active", "disconnected", 5),
        ("disconnected", "pending", 0),
        ("pending", "active", 0),
    ]


def test_sigterm_commits_every_accepted_change_before_exit(manager: ManagerProcess) -> None:
    manager.settings.flush_interval = 5.0  # nothing would be written before the stop without the final flush
    keys = manager.add_agents(20)
    manager.start()

    async def scenario() -> None:
        for key in keys:
            connection = await connect(manager, key)
            await handshake(connection)
            connection.send(KEEPALIVE)
            assert await connection.receive() == control.Ack()

    asyncio.run(scenario())
    manager.signal(signal.SIGTERM)
    code = manager.stop()
    assert code == 0, manager.output()[-4000:]
    assert {status for status, _ in manager.statuses().values()} == {"active"}
