"""Bad input closes that one connection, with a clear log line, and the rest of the fleet never notices."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.keys import AgentKey, KeysFile, parse_ip
from tests.e2e.harness import LOOPBACK, ManagerProcess, wait_until
from tests.e2e.test_statuses import KEEPALIVE

Attack = Callable[[ManagerProcess, AgentKey], Awaitable[AgentConnection]]


async def _open(
    manager: ManagerProcess, key: AgentKey, counter: SenderCounter | None = None
) -> AgentConnection:
    codec = AgentCodec(key, counter=counter or SenderCounter())
    return await AgentConnection.open(codec, LOOPBACK, manager.port)


async def _healthy_round(connection: AgentConnection) -> None:
    connection.send(KEEPALIVE)
    assert await connection.receive() == control.Ack()


async def _refused(connection: AgentConnection) -> None:
    """The manager closes the connection without answering."""
    assert await connection.receive(timeout=5) is None


def _run_attack(manager: ManagerProcess, attack: Attack, log_text: str) -> None:
    healthy, victim = manager.add_agents(2)
    manager.start()

    async def scenario() -> None:
        good = await _open(manager, healthy)
        good.send(control.build_startup("v4.14.7"))
        assert await good.receive() == control.Ack()
        await _healthy_round(good)
        bad = await attack(manager, victim)
        await _refused(bad)
        for _ in range(3):
            await _healthy_round(good)
        assert not good.closed.is_set()
        good.close()

    asyncio.run(scenario())
    manager.wait_for(healthy.number, "active")
    assert manager.status(victim.number) == ("never_connected", 0)
    assert log_text in manager.output()


def test_unknown_agent_id_is_refused(manager: ManagerProcess) -> None:
    async def attack(manager: ManagerProcess, victim: AgentKey) -> AgentConnection:
        ghost = AgentKey("777", "ghost", parse_ip("any"), victim.key)
        connection = await _open(manager, ghost)
        connection.send(control.build_startup("v4.14.7"))
        return connection

    _run_attack(manager, attack, "refused: unknown agent: invalid id 777")


def test_wrong_key_is_refused(manager: ManagerProcess) -> None:
    async def attack(manager: ManagerProcess, victim: AgentKey) -> AgentConnection:
        forged = AgentKey(victim.id, victim.name, victim.ip, "0" * 64)
        connection = await _open(manager, forged)
        connection.send(control.build_startup("v4.14.7"))
        return connection

    _run_attack(manager, attack, f"Connection from '{LOOPBACK}' refused: ")


def test_source_ip_outside_the_keys_range_is_refused(manager: ManagerProcess) -> None:
    manager.add_agents(1, ip="10.20.0.0/16", prefix="far")  # id 001; the attack uses the real key

    async def attack(manager: ManagerProcess, victim: AgentKey) -> AgentConnection:
        far = KeysFile.parse(manager.home.client_keys.read_text()).by_id(1)
        assert far is not None
        connection = await _open(manager, far)
        connection.send(control.build_startup("v4.14.7"))
        return connection

    _run_attack(manager, attack, "refused: source ip not allowed: agent 001 may not send from '127.0.0.1'")


def test_oversized_frame_is_refused(manager: ManagerProcess) -> None:
    async def attack(manager: ManagerProcess, victim: AgentKey) -> AgentConnection:
        connection = await _open(manager, victim)
        connection.send_raw(struct.pack("<I", 65537) + b"x" * 100)
        return connection

    # Before authentication a frame may announce max_unauthenticated_frame (16384) bytes at most.
    _run_attack(manager, attack, "refused: frame too big: frame length 65537 > 16384")


def test_garbage_is_refused(manager: ManagerProcess) -> None:
    async def attack(manager: ManagerProcess, victim: AgentKey) -> AgentConnection:
        connection = await _open(manager, victim)
        connection.send_raw(struct.pack("<I", 11) + b"hello world")
        return connection

    _run_attack(manager, attack, "refused: bad header")


def test_empty_frame_is_refused(manager: ManagerProcess) -> None:
    async def attack(manager: ManagerProcess, victim: AgentKey) -> AgentConnection:
        connection = await _open(manager, victim)
        connection.send_raw(struct.pack("<I", 0))
        return connection

    _run_attack(manager, attack, "refused: empty message")


def test_second_connection_with_a_key_in_use_is_refused(manager: ManagerProcess) -> None:
    async def attack(manager: ManagerProcess, victim: AgentKey) -> AgentConnection:
        first = await _open(manager, victim)
        first.send(control.build_startup("v4.14.7"))
        assert await first.receive() == control.Ack()
        second = await _open(manager, victim)
        second.send(control.build_startup("v4.14.7"))
        await _refused(second)
        assert not first.closed.is_set()
        first.send(control.SHUTDOWN)
        first.close()
        return await _closed_connection(manager, victim)

    _run_attack_with_status(manager, attack, "refused: agent key already in use")


async def _closed_connection(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    connection = await _open(manager, key)
    connection.close()
    return connection


def _run_attack_with_status(manager: ManagerProcess, attack: Attack, log_text: str) -> None:
    _, victim = manager.add_agents(2)
    manager.start()

    async def scenario() -> None:
        bad = await attack(manager, victim)
        await _refused(bad)

    asyncio.run(scenario())
    assert log_text in manager.output()
    manager.wait_for(victim.number, "disconnected", 3)


def test_replayed_counter_is_refused_when_verify_msg_id_is_on(manager: ManagerProcess) -> None:
    manager.settings.extra_remote = "<verify_msg_id>yes</verify_msg_id>"
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        first = await _open(manager, key)
        first.send(control.build_startup("v4.14.7"))
        assert await first.receive() == control.Ack()
        await _healthy_round(first)
        first.close()
        await asyncio.sleep(0.2)
        replay = await _open(manager, key, SenderCounter(0, 0))  # starts again at 0:1
        replay.send(control.build_startup("v4.14.7"))
        await _refused(replay)

    asyncio.run(scenario())
    # Counters that went back on a new connection; with verify_msg_id they are not even challenged.
    assert "refused: replayed counter" in manager.output()


def test_removed_agent_is_disconnected_and_refused_after_the_keys_change(manager: ManagerProcess) -> None:
    kept, removed = manager.add_agents(2)
    manager.start()

    async def scenario() -> None:
        connections = []
        for key in (kept, removed):
            connection = await _open(manager, key)
            connection.send(control.build_startup("v4.14.7"))
            assert await connection.receive() == control.Ack()
            await _healthy_round(connection)
            connections.append(connection)
        keys = KeysFile.parse(manager.home.client_keys.read_text())
        keys.remove(removed.id)
        manager.home.client_keys.write_text(keys.render())
        assert await connections[1].receive(timeout=5) is None  # closed by the reload (checked every 1 s)
        again = await _open(manager, removed)
        again.send(control.build_startup("v4.14.7"))
        await _refused(again)
        await _healthy_round(connections[0])
        connections[0].close()

    asyncio.run(scenario())
    assert "client.keys reload accepted: 1 agents, +0 -1" in manager.output()
    # Purged (the default): its row leaves global.db, its history ends disconnected.
    wait_until(lambda: manager.status(removed.number) == ("missing", -1), "the removed agent purged")
    assert manager.history(removed.number)[-1][1] == "disconnected"


def test_new_agent_in_client_keys_is_accepted_without_restart(manager: ManagerProcess) -> None:
    manager.add_agents(1)
    manager.start()
    (late,) = manager.add_agents(1)

    async def scenario() -> None:
        for _ in range(50):
            connection = await _open(manager, late)
            connection.send(control.build_startup("v4.14.7"))
            reply = await connection.receive(timeout=5)
            connection.close()
            if reply == control.Ack():
                return
            await asyncio.sleep(0.2)
        raise AssertionError("the new agent was never accepted")

    asyncio.run(scenario())
    manager.wait_for(late.number, "pending")
