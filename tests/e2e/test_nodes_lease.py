"""A node that lost its cluster lease stops claiming agents: a second process started with the same
`<node_name>` (a duplicate) takes the name's lease; the first one then closes its agents' connections,
takes no new one, and serves again (a new epoch) once the duplicate has stopped."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings
from tests.e2e.test_nodes_follow import connect
from tests.e2e.wdb_tools import write_keys
from tests.pgserver import PostgresServer


def epoch_of(node: ManagerProcess, name: str) -> int:
    return int(node.query("SELECT epoch FROM cluster_node WHERE name = ?", name)[0][0])


async def refused(node: ManagerProcess, key: object) -> bool:
    """A new connection is closed before its startup is answered."""
    connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, node.port)  # type: ignore[arg-type]
    try:
        connection.send(control.build_startup("v4.14.7"))
        return await connection.receive(timeout=5) is None
    except (ConnectionError, OSError):
        return True
    finally:
        connection.close()


def test_a_node_that_lost_its_lease_lets_its_agents_go_and_serves_again_with_a_new_epoch(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    dsn = postgres.create_database("e2e_nodes_lease")
    a = ManagerProcess(tmp_path / "a", ManagerSettings(node_name="node-a", connection_grace=2.0))
    twin = ManagerProcess(tmp_path / "twin", ManagerSettings(node_name="node-a", connection_grace=2.0))
    a.use_postgresql(dsn)
    twin.use_postgresql(dsn)
    keys = write_keys(a, 3)
    twin.home.create_layout()
    shutil.copy(a.home.client_keys, twin.home.client_keys)
    a.start()
    try:

        async def scenario() -> None:
            agents = [await connect(a, key) for key in keys]
            first = epoch_of(a, "node-a")
            await asyncio.to_thread(twin.start)  # the same node name: a newer epoch of it
            lost = time.monotonic()
            for agent in agents:  # node-a closes them at its next renewal
                assert await agent.receive(timeout=5) is None
                agent.close()
            assert time.monotonic() - lost < 4.0
            assert await refused(a, keys[0])
            await asyncio.sleep(1.5)
            assert await refused(a, keys[1])  # still: the name is held by the twin
            assert "is held by another process" in a.output()
            assert await asyncio.to_thread(twin.stop) == 0  # releases the name's lease
            stopped = time.monotonic()
            while "registered again" not in a.output():
                assert time.monotonic() - stopped < 5.0, a.output()[-3000:]
                await asyncio.sleep(0.1)
            assert epoch_of(a, "node-a") > first + 1
            # served again (a new codec's counters went back: the manager may also challenge it)
            again = await AgentConnection.open(AgentCodec(keys[2]), LOOPBACK, a.port)
            again.send(control.build_startup("v4.14.7"))
            assert await again.receive(timeout=10) == control.Ack()
            again.close()

        asyncio.run(scenario())
    finally:
        twin.stop()
        assert a.stop() == 0
    assert "Cluster lease lost" in a.output()
