"""`connection_overtake_time` across two real nodes on one PostgreSQL: two live sessions of one agent, the
old one on node-a, a newer one on node-b (as after a network path that broke without a FIN).

- the old one is live (it keeps sending): node-b's newer connection is refused (closed within a couple of
  flushes of its handshake), node-a keeps serving the agent and holds it in the database;
- the old one has been quiet for longer than connection_overtake_time: node-b takes the agent, node-a
  closes its connection when it learns it lost, and nothing shows the agent disconnected."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.e2e.test_nodes_follow import connect, two_nodes
from tests.events.fleet import KEEPALIVE
from tests.pgserver import PostgresServer


def holder(node: ManagerProcess, agent_id: int) -> str | None:
    rows = node.query("SELECT node_name FROM agent_runtime WHERE agent_id = ?", agent_id)
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


async def keep_sending(connection: AgentConnection, every: float, stop: asyncio.Event) -> int:
    """Keep-alives every `every` s until `stop`; how many were acknowledged (a closed connection ends it)."""
    acked = 0
    while not stop.is_set():
        connection.send(KEEPALIVE)
        if await connection.receive(timeout=5) != control.Ack():
            return -1
        acked += 1
        await asyncio.sleep(every)
    return acked


def test_a_newer_connection_on_another_node_is_refused_while_the_old_one_is_live(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    a, b, keys, _ = two_nodes(tmp_path, postgres, "e2e_overtake_live", 1, overtake_time=10)
    key = keys[0]
    a.start()
    b.start()
    try:

        async def scenario() -> None:
            old = await connect(a, key)
            stop = asyncio.Event()
            sender = asyncio.create_task(keep_sending(old, 0.3, stop))
            await asyncio.sleep(0.5)
            assert holder(a, key.number) == "node-a"
            newer = await AgentConnection.open(AgentCodec(key), LOOPBACK, b.port)
            newer.send(control.build_startup("v4.14.7"))
            assert await newer.receive(timeout=10) == control.Ack()  # taken, then refused
            opened = time.monotonic()
            while await newer.receive(timeout=5) is not None:  # a TimeoutError fails the test
                pass
            assert time.monotonic() - opened < 3.0
            newer.close()
            await asyncio.sleep(1.0)
            stop.set()
            assert await sender > 0, "node-a stopped answering the old connection"
            assert holder(a, key.number) == "node-a"
            assert a.status(key.number) == ("active", 0)
            disconnections = a.query(
                "SELECT COUNT(*) FROM agent_status_history WHERE agent_id = ? AND to_status = 'disconnected'",
                key.number,
            )
            assert disconnections[0][0] == 0
            old.close()

        asyncio.run(scenario())
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    assert "newer connections here refused" in b.output()
    assert "so the newer connection there is refused" in a.output()


def test_a_connection_quiet_for_the_overtake_time_is_overtaken_by_another_node(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    a, b, keys, _ = two_nodes(tmp_path, postgres, "e2e_overtake_quiet", 1, overtake_time=1)
    key = keys[0]
    a.start()
    b.start()
    try:

        async def scenario() -> None:
            old = await connect(a, key)
            await asyncio.sleep(1.6)  # silent on node-a for longer than connection_overtake_time
            newer = await connect(b, key)
            taken = time.monotonic()
            assert await old.receive(timeout=5) is None  # node-a closed it once it learnt
            assert time.monotonic() - taken < 3.0
            old.close()
            stop = asyncio.Event()
            sender = asyncio.create_task(keep_sending(newer, 0.3, stop))
            await asyncio.sleep(1.5)
            stop.set()
            assert await sender > 0
            assert holder(b, key.number) == "node-b"
            assert b.status(key.number) == ("active", 0)
            rows = a.query(
                "SELECT to_status FROM agent_status_history WHERE agent_id = ? ORDER BY seq", key.number
            )
            assert "disconnected" not in [row[0] for row in rows], rows
            newer.close()

        asyncio.run(scenario())
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    assert "overtaken" in a.output()
