"""The manager keep-alive on an injected clock: probe at `interval`, disconnect (code 4) at `timeout`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.config import Config, ManagerKeepalive, RemoteConfig
from agentpulse.looplag import LoopLag
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.remoted.server import Remoted
from agentpulse.store.facade import Store
from agentpulse.wire import control
from agentpulse.wire.keys import KeysFile
from tests.e2e.harness import LOOPBACK, free_port
from tests.store.test_facade import Clock, read

KEYS = KeysFile.parse("001 web-01 any k1\n002 web-02 any k2\n")


async def _stack(tmp_path: Path, clock: Clock) -> tuple[Store, Remoted, KeepaliveScheduler]:
    settings = ManagerKeepalive(enabled=True, interval=2.0, timeout=5.0)
    config = Config(remote=RemoteConfig(port=free_port(), local_ip=LOOPBACK, manager_keepalive=settings))
    store = Store(
        tmp_path / "db", manager_host="m", node_name="n", clock=clock.wall, monotonic=clock.monotonic
    )
    await asyncio.to_thread(store.open, list(KEYS.active()))
    grace = GraceTracker(store.submit, config.remote.connection_grace, clock.wall)
    keys = KeyStore()
    remoted = Remoted(config, keys, store, grace, clock=clock.wall, monotonic=clock.monotonic)
    scheduler = KeepaliveScheduler(remoted, settings)
    remoted.keys_changed(keys.load(KEYS))
    await remoted.start()
    return store, remoted, scheduler


async def _agent(remoted: Remoted, number: int) -> AgentConnection:
    key = KEYS.by_id(number)
    assert key is not None
    connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, remoted.tcp_port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive() == control.Ack()
    return connection


def test_silent_agent_gets_a_getstate_probe_after_the_interval(tmp_path: Path) -> None:
    clock = Clock()

    async def scenario() -> None:
        store, remoted, scheduler = await _stack(tmp_path, clock)
        connection = await _agent(remoted, 1)
        clock.mono += 1.9
        scheduler.check(clock.mono)
        assert scheduler.probes_sent == 0
        clock.mono += 0.2
        scheduler.check(clock.mono)
        probe = await connection.receive()
        assert isinstance(probe, control.Request)
        assert (probe.target, probe.payload) == ("agent", "getstate")
        state = (
            '{"error":0,"data":{"status":"connected","last_keepalive":"2026-11-28 06:00:00","msg_sent":7}}'
        )
        connection.send(control.build_request_reply(probe.counter, state))
        await asyncio.sleep(0.2)
        clock.mono += 4.0  # 6 s after the startup, but the reply was 4 s ago
        scheduler.check(clock.mono)
        assert scheduler.timeouts == 0
        await remoted.stop()
        await asyncio.to_thread(store.close)
        row = read(store, "SELECT state_json FROM agent_runtime WHERE agent_id = 1")[0]
        assert '"msg_sent": 7' in row[0]

    asyncio.run(scenario())


def test_agent_silent_for_the_timeout_is_disconnected_with_code_4_and_closed(tmp_path: Path) -> None:
    clock = Clock()

    async def scenario() -> None:
        store, remoted, scheduler = await _stack(tmp_path, clock)
        silent = await _agent(remoted, 1)
        talking = await _agent(remoted, 2)
        for _ in range(6):
            clock.mono += 1.0
            talking.send(control.build_keepalive("Linux - Wazuh v4.14.7", merged_sum=None))
            assert await talking.receive() == control.Ack()
            scheduler.check(clock.mono)
        received = await _until_closed(silent)
        assert isinstance(received[0], control.Request)  # probed at 2 s, closed at 5 s
        assert received[-1] is None
        assert not talking.closed.is_set()
        assert scheduler.timeouts == 1
        await remoted.stop()
        await asyncio.to_thread(store.close)
        statuses = {
            r[0]: (r[1], r[2]) for r in read(store, "SELECT id, connection_status, status_code FROM agent")
        }
        assert statuses[1] == ("disconnected", 4)
        assert statuses[2] == ("active", 0)
        history = read(store, "SELECT to_status, status_code FROM agent_status_history WHERE agent_id = 1")
        assert [tuple(r) for r in history][-1] == ("disconnected", 4)
        assert len(history) == 2  # no extra connection-lost transition from the close

    asyncio.run(scenario())


async def _until_closed(connection: AgentConnection) -> list[object]:
    received: list[object] = []
    for _ in range(10):
        received.append(await connection.receive(timeout=2))
        if received[-1] is None:
            break
    return received


def test_heap_holds_one_entry_per_connection_whatever_the_traffic(tmp_path: Path) -> None:
    clock = Clock()

    async def scenario() -> None:
        store, remoted, scheduler = await _stack(tmp_path, clock)
        connection = await _agent(remoted, 1)
        for _ in range(50):
            connection.send(control.build_keepalive("Linux - Wazuh v4.14.7", merged_sum=None))
            assert await connection.receive() == control.Ack()
            clock.mono += 0.5
            scheduler.check(clock.mono)
        assert len(scheduler) == 1
        await remoted.stop()
        await asyncio.to_thread(store.close)

    asyncio.run(scenario())


def test_bytes_waiting_unread_and_the_loop_lag_spare_an_agent_the_manager_could_not_read(
    tmp_path: Path,
) -> None:
    clock = Clock()

    async def scenario() -> None:
        store, remoted, scheduler = await _stack(tmp_path, clock)
        lag = LoopLag(monotonic=clock.monotonic)
        scheduler.lag = lag
        waiting = await _agent(remoted, 1)
        session = next(iter(remoted.sessions))
        assert session.transport is not None
        session.transport.pause_reading()  # the manager is too busy to read it
        waiting.send(control.build_keepalive("Linux - Wazuh v4.14.7", merged_sum=None))
        await asyncio.sleep(0.2)
        clock.mono += 6.0  # past the 5 s timeout by last_received
        scheduler.check(clock.mono)
        assert scheduler.timeouts == 0 and scheduler.spared == 1
        session.transport.resume_reading()
        assert await waiting.receive() == control.Ack()
        waiting.close()
        lagging = await _agent(remoted, 2)
        lag.note(3.0, clock.mono)  # the loop ran 3 s late
        clock.mono += 7.0  # agent 2 silent 7 s: under 5 s + 3 s
        scheduler.check(clock.mono)
        assert scheduler.timeouts == 0
        clock.mono += 1.5
        scheduler.check(clock.mono)
        assert scheduler.timeouts == 1  # agent 2, now silent 8.5 s
        assert await _until_closed(lagging)
        await remoted.stop()
        await asyncio.to_thread(store.close)
        rows = read(store, "SELECT status_code, reason FROM agent_status_history WHERE agent_id = 2")
        assert tuple(rows[-1]) == (
            4,
            "no keep-alive within the timeout (while the manager was overloaded: 3.0 s behind)",
        )

    asyncio.run(scenario())
