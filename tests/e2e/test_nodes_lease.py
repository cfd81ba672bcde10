"""A node that lost its cluster lease stops claiming agents: a second process started with the same
`<node_name>` (a duplicate) takes the name's lease; the first one then closes its agents' connections,
takes no new one (also from a remoted worker restarted meanwhile), and serves again (a new epoch) once
the duplicate has stopped."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey
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


def node_and_twin(
    tmp_path: Path, dsn: str, workers: int
) -> tuple[ManagerProcess, ManagerProcess, list[AgentKey]]:
    """node-a started on `dsn` with three agents, and a second process of the same name, the same keys and
    one worker, not started yet (the twin)."""
    a = ManagerProcess(
        tmp_path / "a", ManagerSettings(node_name="node-a", connection_grace=2.0, workers=workers)
    )
    twin = ManagerProcess(tmp_path / "twin", ManagerSettings(node_name="node-a", connection_grace=2.0))
    a.use_postgresql(dsn)
    twin.use_postgresql(dsn)
    keys = write_keys(a, 3)
    twin.home.create_layout()
    shutil.copy(a.home.client_keys, twin.home.client_keys)
    a.start()
    return a, twin, keys


def test_a_node_that_lost_its_lease_lets_its_agents_go_and_serves_again_with_a_new_epoch(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    a, twin, keys = node_and_twin(tmp_path, postgres.create_database("e2e_nodes_lease"), workers=1)
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


def children_of(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_remoted_worker_restarted_while_the_node_has_no_lease_takes_no_agent(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Two remoted workers; the twin takes node-a's lease, then both workers are killed and restarted by
    the pool: they must start paused, as the node is. (Without it a restarted worker serves: it fails.)"""
    a, twin, keys = node_and_twin(tmp_path, postgres.create_database("e2e_nodes_lease_workers"), workers=2)
    try:

        async def scenario() -> None:
            agent = await connect(a, keys[0])
            await asyncio.to_thread(twin.start)
            assert await agent.receive(timeout=5) is None  # lease lost: node-a let it go
            agent.close()
            assert a.process is not None
            workers = children_of(a.process.pid)
            assert len(workers) == 2, workers
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            while True:  # both restarted and listening again
                restarted = children_of(a.process.pid) - workers
                output = a.output()
                if len(restarted) == 2 and all(f"ready (pid {pid})" in output for pid in restarted):
                    break
                assert time.monotonic() - killed < 15.0, output[-3000:]
                await asyncio.sleep(0.1)
            for attempt in range(6):  # each lands on either worker (SO_REUSEPORT)
                assert await refused(a, keys[attempt % len(keys)]), f"attempt {attempt} was served"

        asyncio.run(scenario())
    finally:
        twin.stop()
        assert a.stop() == 0
