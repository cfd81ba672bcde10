"""Issue 17, item 2: connections that never authenticate cannot exhaust a remoted process.

A few hundred hostile connections from 127.0.0.2-9 (a byte, a partial header, a slowloris frame) with
the caps set low: once they have waited a second, more from the same address are refused at once; they
are closed at the frame deadline; and 100 real agents, half of them connecting during the flood, stay
connected and acknowledged throughout. A connection that sends nothing is the kernel's to hold
(TCP_DEFER_ACCEPT) until it speaks or the deferral ends, then it has its frame_timeout like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.remoted.acceptor import HANDSHAKE_TARGET
from agentpulse.remoted.admission import COUNTED_AFTER
from agentpulse.wire import control
from agentpulse.wire.frames import LENGTH
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.e2e.test_statuses import KEEPALIVE

HOSTILE_SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]
FRAME_TIMEOUT = 4.0
PER_IP = 30
KINDS = ("byte", "partial", "slowloris")  # 10 of each per address: PER_IP in all
EXCESS = 5  # more per address, refused at once


@dataclass
class Hostile:
    kind: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float
    closed: float | None = None
    trickle: asyncio.Task[None] | None = field(default=None, repr=False)


async def open_hostile(port: int, source: str, kind: str) -> Hostile:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))
    hostile = Hostile(kind, reader, writer, time.monotonic())
    if kind == "byte":
        writer.write(b"\x10")  # one byte of a four-byte length, then nothing
    elif kind == "partial":
        writer.write(b"\x10\x00")  # two bytes of a four-byte length
    elif kind == "slowloris":
        writer.write(LENGTH.pack(16000) + b"x" * 15000)  # then one byte every half second
        hostile.trickle = asyncio.create_task(trickle(writer))
    return hostile


async def trickle(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        for _ in range(60):  # bounded: 30 s at most
            await asyncio.sleep(0.5)
            if writer.is_closing():
                return
            writer.write(b"x")
            await writer.drain()


async def watch_close(hostile: Hostile, timeout: float) -> None:
    """Set `closed` when the manager closes it (EOF or reset) within `timeout`."""
    try:
        data = await asyncio.wait_for(hostile.reader.read(1), timeout)
    except TimeoutError:  # before OSError, of which it is a subclass
        return
    except OSError:
        data = b""
    if data == b"":
        hostile.closed = time.monotonic()


async def agent_online(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive(timeout=5) == control.Ack()
    return connection


async def keepalive_round(agents: list[AgentConnection]) -> None:
    """Every agent sends a keep-alive and is acked within 5 s."""
    for agent in agents:
        agent.send(KEEPALIVE)
    replies = await asyncio.gather(*(agent.receive(timeout=5) for agent in agents))
    assert replies == [control.Ack()] * len(agents)


def test_hostile_connections_are_capped_and_timed_out_while_agents_stay_acked(
    manager: ManagerProcess,
) -> None:
    manager.settings.extra_remote = (
        f"<frame_timeout>{FRAME_TIMEOUT}</frame_timeout>"
        f"<max_unauthenticated_per_ip>{PER_IP}</max_unauthenticated_per_ip>"
        "<max_unauthenticated>1000</max_unauthenticated>"
    )
    keys = manager.add_agents(100)
    manager.start()

    async def scenario() -> None:
        agents = [await agent_online(manager, key) for key in keys[:50]]
        await keepalive_round(agents)
        held: list[Hostile] = []
        excess: list[Hostile] = []
        for source in HOSTILE_SOURCES:
            for kind in KINDS:
                held += [await open_hostile(manager.port, source, kind) for _ in range(PER_IP // len(KINDS))]
        flood_open = time.monotonic()
        await asyncio.sleep(COUNTED_AFTER + 1.0)  # the held ones count toward their address's cap now
        for source in HOSTILE_SOURCES:
            excess += [await open_hostile(manager.port, source, "byte") for _ in range(EXCESS)]

        # The excess is refused at once; the others stay until their deadline.
        await asyncio.gather(*(watch_close(hostile, 2.0) for hostile in excess))
        assert all(hostile.closed is not None and hostile.closed - hostile.opened < 2.0 for hostile in excess)

        # Meanwhile agents keep connecting and the connected ones stay acked.
        agents += [await agent_online(manager, key) for key in keys[50:]]
        await keepalive_round(agents)

        # Every hostile connection is closed at its deadline (give the sweep and a loaded machine room).
        deadline = FRAME_TIMEOUT + 4.0 - (time.monotonic() - flood_open)
        await asyncio.gather(*(watch_close(hostile, deadline) for hostile in held))
        still_open = [hostile.kind for hostile in held if hostile.closed is None]
        assert still_open == []
        early = [h.kind for h in held if h.closed is not None and h.closed - h.opened < FRAME_TIMEOUT - 0.5]
        assert early == []
        for hostile in held + excess:
            if hostile.trickle is not None:
                hostile.trickle.cancel()
            hostile.writer.close()

        await keepalive_round(agents)
        for agent in agents:
            assert not agent.closed.is_set()
            agent.close()

    asyncio.run(scenario())
    statuses = manager.statuses()
    assert sorted(statuses) == [key.number for key in keys]
    assert all(status == ("active", 0) for status in statuses.values())
    output = manager.output()
    refusal = f"refused: {PER_IP} connections from that address unauthenticated for over 1 s"
    assert output.count(refusal) == 1  # rate-limited: one line for the 40
    assert "closed: no authenticated message" in output
    assert "bytes of a frame buffered (frame_timeout" in output
    assert output.count("(frame_timeout") <= 4  # a line per kind, not one per connection
    assert "Traceback" not in output


def test_at_the_total_cap_the_oldest_unauthenticated_make_room_for_new_connections(
    manager: ManagerProcess,
) -> None:
    manager.settings.extra_remote = (
        "<max_unauthenticated>40</max_unauthenticated><frame_timeout>30</frame_timeout>"
    )
    keys = manager.add_agents(10)
    manager.start()

    async def scenario() -> None:
        sources = HOSTILE_SOURCES
        idle = [await open_hostile(manager.port, sources[n % len(sources)], "byte") for n in range(40)]
        idle += [await open_hostile(manager.port, sources[n % len(sources)], "byte") for n in range(5)]
        agents = [await agent_online(manager, key) for key in keys]  # the first closes one more
        await keepalive_round(agents)
        await asyncio.gather(*(watch_close(hostile, 1.0) for hostile in idle))
        assert [hostile.closed is not None for hostile in idle] == [True] * 6 + [False] * 39
        for hostile in idle:
            hostile.writer.close()
        for agent in agents:
            agent.close()

    asyncio.run(scenario())
    output = manager.output()
    assert "Closed the oldest unauthenticated connection (from '127.0.0.2'" in output
    assert "max_unauthenticated 40 reached" in output


def test_a_few_hundred_idle_connections_do_not_hold_the_listener_shut(manager: ManagerProcess) -> None:
    # More idle connections than the acceptor's smallest handshake budget (256), spread over addresses so no
    # per-address cap applies, with a long frame_timeout: agents must still connect once the idle ones are
    # a handshake's wait old, not after their frame_timeout.
    manager.settings.extra_remote = "<frame_timeout>30</frame_timeout>"
    keys = manager.add_agents(5)
    manager.start()

    async def scenario() -> None:
        sources = HOSTILE_SOURCES
        idle = [await open_hostile(manager.port, sources[n % len(sources)], "byte") for n in range(300)]
        await asyncio.sleep(HANDSHAKE_TARGET + 1.0)
        started = time.monotonic()
        agents = [await agent_online(manager, key) for key in keys]
        assert time.monotonic() - started < 5.0
        await keepalive_round(agents)
        for hostile in idle:
            hostile.writer.close()
        for agent in agents:
            agent.close()

    asyncio.run(scenario())
    assert "Traceback" not in manager.output()


def test_a_startup_sent_after_frame_timeout_of_the_tcp_connect_is_served_and_silence_is_closed_later(
    manager: ManagerProcess,
) -> None:
    """An agent whose startup reaches the manager late (a restart storm: the accept queue overflowed and the
    startup's retransmission backed off) is served: the deadline starts when the kernel hands the connection
    over, which with TCP_DEFER_ACCEPT is when its first bytes came. A connection that never speaks is closed
    all the same, after the deferral and its frame_timeout."""
    manager.settings.extra_remote = "<frame_timeout>2</frame_timeout>"
    (key,) = manager.add_agents(1)
    manager.start()

    async def scenario() -> tuple[float | None, float]:
        silent = await open_hostile(manager.port, HOSTILE_SOURCES[0], "idle")
        connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
        await asyncio.sleep(3.0)  # over frame_timeout since the connect
        connection.send(control.build_startup("v4.14.7"))
        assert await connection.receive(timeout=5) == control.Ack()
        connection.close()
        await watch_close(silent, 20.0)  # the kernel defers 2 s (SYN-ACKs at 1 and 3 s), then 2 s here
        silent.writer.close()
        return silent.closed, silent.opened

    closed, opened = asyncio.run(scenario())
    assert closed is not None and closed - opened >= 2.0
    assert "no authenticated message" in manager.output()
