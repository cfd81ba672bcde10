"""Replays (issue 17, item 4): captured frames sent again, from another address, on another worker or
after the agent died, against a real manager with one and with two remoted workers. Real agents still
pass: a restarted one keeps counting, a reinstalled one (counters reset) proves itself live.

Frames are captured as the harness' fake agent puts them on the wire (`AgentCodec.seal`, then
`send_raw`), so a replay is byte for byte what an eavesdropper saw.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, AgentFactory, ManagerProcess, wait_until
from tests.e2e.test_statuses import KEEPALIVE

STARTUP = control.build_startup("v4.14.7")
SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]  # "another address": the loopback range beside the agent's
ATTEMPTS = 12  # connections per attack: with two workers, some surely land on the other one
WORKERS = [pytest.param(1, id="one-worker"), pytest.param(2, id="two-workers")]


class FakeAgent:
    """One connection of the harness' fake agent; every frame it sends is kept, as captured."""

    def __init__(self, connection: AgentConnection) -> None:
        self.connection = connection
        self.captured: list[bytes] = []

    @classmethod
    async def open(cls, manager: ManagerProcess, key: AgentKey, counter: SenderCounter) -> FakeAgent:
        codec = AgentCodec(key, counter=counter)  # one counter across connections: the agent's sender_counter
        return cls(await AgentConnection.open(codec, LOOPBACK, manager.port))

    def send(self, payload: bytes) -> bytes:
        frame = self.connection.codec.seal(payload)
        self.connection.send_raw(frame)
        self.captured.append(frame)
        return frame

    async def round(self, payload: bytes) -> bytes:
        frame = self.send(payload)
        assert await self.connection.receive() == control.Ack()
        return frame


async def replay(manager: ManagerProcess, frames: list[bytes], source: str, wait: float = 5.0) -> bytes:
    """Send captured frames on a new connection from `source`; what came back before the manager closed
    it (or `wait` ran out)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, manager.port, local_addr=(source, 0))
    try:
        writer.write(b"".join(frames))
        await writer.drain()
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    received += chunk
        return received
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def refusals(manager: ManagerProcess) -> list[str]:
    return [line for line in manager.output().splitlines() if "refused" in line]


@pytest.mark.parametrize("workers", WORKERS)
def test_a_shutdown_replayed_from_another_address_does_not_disconnect_the_agent(
    manager: ManagerProcess, workers: int
) -> None:
    manager.settings.workers = workers
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        counter = SenderCounter()
        earlier = await FakeAgent.open(manager, key, counter)  # an earlier run of the agent, captured
        await earlier.round(STARTUP)
        await earlier.round(KEEPALIVE)
        shutdown = earlier.send(control.SHUTDOWN)
        await manager.reach(key.number, "disconnected", 3)
        earlier.connection.close()
        # Restarted at once: with two workers the new connection may reach the other worker before the
        # manager has read the old one's close; it judges such a "key in use" again before refusing
        # (worker_pool.KEY_IN_USE_RECHECK), so the restart is taken (3 failures in 64 runs before that).
        agent = await FakeAgent.open(manager, key, counter)  # restarted: its count goes on
        await agent.round(STARTUP)
        await agent.round(KEEPALIVE)
        await manager.reach(key.number, "active")
        replies = [await replay(manager, [shutdown], SOURCES[n % len(SOURCES)]) for n in range(ATTEMPTS)]
        assert replies == [b""] * ATTEMPTS  # closed, unanswered
        await agent.round(KEEPALIVE)
        await asyncio.sleep(manager.settings.flush_interval * 5)
        assert manager.status(key.number) == ("active", 0)
        agent.connection.close()

    asyncio.run(scenario())
    assert manager.history(key.number)[-2:] == [("disconnected", "pending", 0), ("pending", "active", 0)]
    assert len(refusals(manager)) >= 1


@pytest.mark.parametrize("workers", WORKERS)
def test_a_keepalive_replayed_every_2_s_after_the_agent_died_does_not_keep_it_active(
    manager: ManagerProcess, workers: int
) -> None:
    manager.settings.workers = workers
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        agent = await FakeAgent.open(manager, key, SenderCounter())
        startup = await agent.round(STARTUP)
        keepalive = await agent.round(KEEPALIVE)
        await manager.reach(key.number, "active")
        agent.connection.abort()  # the agent dies
        replays = asyncio.create_task(_every_2_s(manager, keepalive, startup))
        took = await manager.reach(key.number, "disconnected", 6, timeout=5)
        assert took <= manager.settings.connection_grace + 1.0  # as usual
        answers = await replays
        assert answers == [b""] * len(answers)
        assert manager.status(key.number) == ("disconnected", 6)

    asyncio.run(scenario())
    assert manager.history(key.number) == [
        ("never_connected", "pending", 0),
        ("pending", "active", 0),
        ("active", "disconnected", 6),
    ]


async def _every_2_s(manager: ManagerProcess, keepalive: bytes, startup: bytes) -> list[bytes]:
    """The captured keep-alive on a new connection every 2 s, four times; then with its startup too,
    which only earns a challenge the replay cannot answer."""
    answers = []
    for n in range(4):
        answers.append(await replay(manager, [keepalive], SOURCES[n]))
        await asyncio.sleep(2.0)
    challenged = await replay(manager, [startup, keepalive, keepalive], SOURCES[0], wait=2.0)
    assert challenged  # an ack and a getstate request, sealed for the agent; nothing counted
    return answers


def test_a_replay_on_the_other_worker_is_refused(manager: ManagerProcess) -> None:
    manager.settings.workers = 2
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        counter = SenderCounter()
        agent = await FakeAgent.open(manager, key, counter)
        startup = await agent.round(STARTUP)
        keepalive = await agent.round(KEEPALIVE)
        await manager.reach(key.number, "active")
        # The agent's key on new connections, with newer counters even: it is in use, on either worker.
        for n in range(ATTEMPTS):
            second = await AgentConnection.open(
                AgentCodec(key, counter=counter), LOOPBACK, manager.port, local_addr=(SOURCES[n % 8], 0)
            )
            second.send(STARTUP)
            assert await second.receive() is None, "a second connection of a live agent was acked"
        for n in range(ATTEMPTS):
            assert await replay(manager, [keepalive], SOURCES[n % 8]) == b""
        await agent.round(KEEPALIVE)
        agent.connection.close()  # gone: the captures still count for nothing on either worker
        await manager.reach(key.number, "disconnected", 6, timeout=5)
        for n in range(ATTEMPTS):
            assert await replay(manager, [keepalive], SOURCES[n % 8]) == b""
        assert await replay(manager, [startup], SOURCES[0], wait=1.0)  # challenged only
        await asyncio.sleep(manager.settings.flush_interval * 5)
        assert manager.status(key.number) == ("disconnected", 6)

    asyncio.run(scenario())
    lines = refusals(manager)
    assert any("remoted[1]" in line for line in lines) and any("remoted[2]" in line for line in lines)
    assert any("agent key already in use" in line for line in lines)
    assert any("replayed counter" in line for line in lines)


@pytest.mark.parametrize("workers", WORKERS)
def test_a_restarted_agent_keeps_counting_and_is_accepted(
    manager: ManagerProcess, agent_process: AgentFactory, workers: int
) -> None:
    manager.settings.workers = workers
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key)
    for run in range(1, 4):
        agent.start()
        wait_until(lambda: _times_active(manager, key) == run, f"active in run {run}")  # noqa: B023
        assert agent.terminate() == 0
        manager.wait_for(key.number, "disconnected", 3, timeout=5)
    assert "challenge" not in manager.output() and refusals(manager) == []


def _times_active(manager: ManagerProcess, key: AgentKey) -> int:
    return manager.history(key.number).count(("pending", "active", 0))


@pytest.mark.parametrize("workers", WORKERS)
def test_a_reinstalled_agent_whose_counters_start_again_is_accepted(
    manager: ManagerProcess, agent_process: AgentFactory, workers: int
) -> None:
    manager.settings.workers = workers
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    wait_until(lambda: agent.counter().local_counter > 3, "a few messages")
    assert agent.terminate() == 0
    manager.wait_for(key.number, "disconnected", 3, timeout=5)
    agent.home.sender_counter.unlink()  # reinstalled, same key: its count starts again at 0:1
    agent.start()
    wait_until(lambda: manager.history(key.number)[-1] == ("pending", "active", 0), "active again", 15)
    assert "answered: its counters were reset; accepted" in manager.output()
    assert agent.counter().global_counter == 0


def test_a_silent_connection_on_one_worker_is_overtaken_from_the_other(manager: ManagerProcess) -> None:
    manager.settings.workers = 2
    manager.settings.overtake_time = 1
    keys = manager.add_agents(10)  # ten agents: some surely reconnect to the other worker
    manager.start()

    async def scenario() -> None:
        counters = [SenderCounter() for _ in keys]
        first = [
            await FakeAgent.open(manager, key, counter) for key, counter in zip(keys, counters, strict=True)
        ]
        for agent in first:
            await agent.round(STARTUP)
            await agent.round(KEEPALIVE)
        await manager.reach_all("active", len(keys))
        await asyncio.sleep(2.5)  # silent for longer than connection_overtake_time (+ the 1 s report lag)
        for key, counter, old in zip(keys, counters, first, strict=True):
            new = await FakeAgent.open(manager, key, counter)  # its count goes on
            await new.round(STARTUP)
            await new.round(KEEPALIVE)
            assert await old.connection.receive(timeout=5) is None  # the silent one was closed
            new.connection.close()

    asyncio.run(scenario())
    output = manager.output()
    assert "refused" not in output
    assert "connection overtaken by another worker" in output
    for key in keys:  # startup, keep-alive, startup, keep-alive: never disconnected on the way
        assert all(to != "disconnected" for _, to, _ in manager.history(key.number)[:4])


@pytest.mark.parametrize("workers", WORKERS)
def test_a_reset_startup_waits_until_the_old_connection_is_gone_then_must_answer(
    manager: ManagerProcess, workers: int
) -> None:
    """Counters that went back are taken only through a startup on a new connection once no other
    connection holds the agent, and only once the getstate request is answered."""
    manager.settings.workers = workers
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> None:
        old = await FakeAgent.open(manager, key, SenderCounter())
        await old.round(STARTUP)
        for _ in range(5):
            await old.round(KEEPALIVE)
        await manager.reach(key.number, "active")
        for n in range(ATTEMPTS // 2):  # reinstalled (0:1 again) while the old connection is live
            early = await AgentConnection.open(
                AgentCodec(key, counter=SenderCounter()), LOOPBACK, manager.port, local_addr=(SOURCES[n], 0)
            )
            early.send(STARTUP)
            assert await early.receive() is None, "a reset startup was taken beside a live connection"
        await old.round(KEEPALIVE)
        old.connection.close()
        await manager.reach(key.number, "disconnected", 6, timeout=5)
        reinstalled = await AgentConnection.open(
            AgentCodec(key, counter=SenderCounter()), LOOPBACK, manager.port
        )
        reinstalled.send(STARTUP)
        assert await reinstalled.receive() == control.Ack()
        request = await reinstalled.receive()
        assert isinstance(request, control.Request) and request.payload == control.GETSTATE
        await asyncio.sleep(manager.settings.flush_interval * 3)
        assert manager.status(key.number) == ("disconnected", 6)  # the ack alone counts for nothing
        reinstalled.send(control.build_request_reply(request.counter, '{"error":0,"data":{}}'))
        reinstalled.send(KEEPALIVE)
        assert await reinstalled.receive() == control.Ack()
        await manager.reach(key.number, "active")
        reinstalled.close()

    asyncio.run(scenario())
    assert manager.history(key.number)[-2:] == [("disconnected", "pending", 0), ("pending", "active", 0)]
    assert any("agent key already in use" in line for line in refusals(manager))


def test_verify_msg_id_works_with_two_workers_and_locks_out_a_reset_agent(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    """Wazuh refuses to start with verify_msg_id and several workers; here the manager's book applies the
    strict rule on every worker: a restart that keeps counting passes, counters that went back do not."""
    manager.settings.workers = 2
    manager.settings.extra_remote = "<verify_msg_id>yes</verify_msg_id>"
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key)
    for run in range(1, 3):
        agent.start()
        wait_until(lambda: _times_active(manager, key) == run, f"active in run {run}")  # noqa: B023
        assert agent.terminate() == 0
        manager.wait_for(key.number, "disconnected", 3, timeout=5)
    agent.home.sender_counter.unlink()  # reinstalled, same key
    agent.start()
    wait_until(
        lambda: "replayed counter" in manager.output() or _times_active(manager, key) > 2,
        "the reset startup refused (or taken)",
        10,
    )
    assert _times_active(manager, key) == 2, "counters that went back were taken with verify_msg_id"
    assert manager.status(key.number) == ("disconnected", 3)
    assert "challenge" not in manager.output()
    agent.terminate()
