"""Two real nodes on one PostgreSQL: a node's own view follows what the other node wrote.

An agent that moves from node-a to node-b inside `connection_grace` is never counted disconnected by
node-a (its /metrics sampled every 200 ms), raises no "Agent disconnected" line there, and node-a writes no
code-6 row; also when node-b's binding is committed only after node-a's grace ended (node-b stopped with
SIGSTOP between the agent's handshake and its flush: the late-grace race, forced). And an agent removed on
one node stops working on the other within a second or two."""

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
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, run_cli
from tests.e2e.test_metrics import scrape, total, with_metrics
from tests.e2e.wdb_tools import FleetStats, run_agent, write_keys
from tests.events.fleet import KEEPALIVE
from tests.pgserver import PostgresServer

FLEET = 10


def two_nodes(
    tmp_path: Path, postgres: PostgresServer, database: str, count: int, **settings: object
) -> tuple[ManagerProcess, ManagerProcess, list[AgentKey], int]:
    """node-a (with /metrics, its port returned) and node-b on one database and one client.keys."""
    dsn = postgres.create_database(database)
    a = ManagerProcess(tmp_path / "a", ManagerSettings(node_name="node-a", **settings))  # type: ignore[arg-type]
    b = ManagerProcess(tmp_path / "b", ManagerSettings(node_name="node-b", **settings))  # type: ignore[arg-type]
    a.use_postgresql(dsn)
    b.use_postgresql(dsn)
    metrics = with_metrics(a)
    keys = write_keys(a, count)
    b.home.create_layout()
    shutil.copy(a.home.client_keys, b.home.client_keys)
    return a, b, keys, metrics


def disconnected_on(metrics_port: int) -> float:
    return total(scrape(metrics_port), "agentpulse_agents", status="disconnected")


def live_on(metrics_port: int) -> float:
    samples = scrape(metrics_port)
    return total(samples, "agentpulse_agents", status="active") + total(
        samples, "agentpulse_agents", status="pending"
    )


def test_a_node_whose_agents_moved_inside_the_grace_never_counts_them_disconnected(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    grace = 2.0
    a, b, keys, metrics = two_nodes(tmp_path, postgres, "e2e_follow_move", FLEET, connection_grace=grace)
    a.start()
    b.start()
    try:

        async def scenario() -> None:
            stats, on_a, on_b = FleetStats(), asyncio.Event(), asyncio.Event()
            first = [asyncio.create_task(run_agent(a, key, on_a, stats, interval=0.5)) for key in keys]
            await a.reach_all("active", FLEET, timeout=60)
            on_a.set()  # each closes its connection to node-a
            await asyncio.gather(*first)
            moved = time.monotonic()
            second = [asyncio.create_task(run_agent(b, key, on_b, stats, interval=0.5)) for key in keys]
            counted: list[float] = []
            while time.monotonic() - moved < grace + 2.0:
                counted.append(await asyncio.to_thread(disconnected_on, metrics))
                await asyncio.sleep(0.2)
            assert set(counted) == {0.0}, counted
            # node-a's view has them as node-b holds them: live, not disconnected
            assert await asyncio.to_thread(live_on, metrics) == FLEET
            assert a.query("SELECT COUNT(*) FROM agent_status_history WHERE status_code = 6")[0][0] == 0
            holders = a.query("SELECT DISTINCT node_name FROM agent_runtime WHERE node_name IS NOT NULL")
            assert [row[0] for row in holders] == ["node-b"]
            on_b.set()
            await asyncio.gather(*second)

        asyncio.run(scenario())
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    assert "Agent disconnected" not in a.output()


def test_the_late_grace_race_node_b_commits_its_binding_after_node_a_s_grace_ended(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """node-b acknowledges the agents' startups inside node-a's grace, then is stopped (SIGSTOP) until
    after that grace ended, so its binding cannot be committed in time. node-a's loss waits for node-b's
    flush mark, then finds node-b holding the agents: no code 6 anywhere, and node-a never counts them
    disconnected. (Without the wait node-a writes code 6 at the end of its grace: it fails here.)"""
    grace = 1.5
    a, b, keys, metrics = two_nodes(tmp_path, postgres, "e2e_follow_race", 5, connection_grace=grace)
    a.start()
    b.start()
    try:

        async def scenario() -> None:
            stats, on_a, on_b = FleetStats(), asyncio.Event(), asyncio.Event()
            first = [asyncio.create_task(run_agent(a, key, on_a, stats, interval=0.3)) for key in keys]
            await a.reach_all("active", len(keys), timeout=60)
            await asyncio.sleep(0.5)  # node-a's binding committed
            on_a.set()
            await asyncio.gather(*first)
            left = time.monotonic()
            second = [asyncio.create_task(run_agent(b, key, on_b, stats, interval=0.3)) for key in keys]
            while len(stats.sessions) < len(keys) or min(stats.sessions.values()) < 2:
                assert time.monotonic() - left < grace - 0.3, f"node-b too slow to answer: {stats}"
                await asyncio.sleep(0.01)
            assert b.process is not None
            os.kill(b.process.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            assert stopped - left < grace - 0.2, "node-b was not stopped inside node-a's grace"
            try:
                counted: list[float] = []
                # Past node-a's grace, and short of node-b's lease expiry (ttl 3 s, renewed each second).
                while time.monotonic() < left + grace + 0.3:
                    counted.append(await asyncio.to_thread(disconnected_on, metrics))
                    await asyncio.sleep(0.2)
            finally:
                os.kill(b.process.pid, signal.SIGCONT)
            assert time.monotonic() - stopped < 2.0
            settled = time.monotonic()
            while time.monotonic() - settled < 3.0:
                counted.append(await asyncio.to_thread(disconnected_on, metrics))
                await asyncio.sleep(0.2)
            assert set(counted) == {0.0}, counted
            assert all(status == "active" for status, _ in b.statuses().values())
            history = a.query(
                "SELECT agent_id, to_status, status_code FROM agent_status_history "
                "WHERE to_status = 'disconnected' ORDER BY agent_id, seq"
            )
            assert [tuple(row) for row in history] == []
            holders = a.query("SELECT DISTINCT node_name FROM agent_runtime WHERE node_name IS NOT NULL")
            assert [row[0] for row in holders] == ["node-b"]
            on_b.set()
            await asyncio.gather(*second)

        asyncio.run(scenario())
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    output = a.output()
    assert "Agent disconnected" not in output
    # node-a learnt it through node-b's binding or its own gate, whichever came first
    assert "agents that were held here: no loss here" in output or "held by other nodes" in output


async def connect(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive(timeout=10) == control.Ack()
    connection.send(KEEPALIVE)
    assert await connection.receive(timeout=10) == control.Ack()
    return connection


def test_an_agent_removed_on_one_node_stops_working_on_the_other_within_two_seconds(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    a, b, keys, _ = two_nodes(tmp_path, postgres, "e2e_follow_removal", 3)
    a.start()
    b.start()
    gone, kept = keys[0], keys[1]
    try:

        async def scenario() -> None:
            on_b = await connect(b, gone)
            other = await connect(b, kept)
            await b.reach(gone.number, "active", timeout=10)
            done = await asyncio.to_thread(run_cli, "manage_agents", "-r", gone.id, home=a.root)
            assert done.returncode == 0, done.stdout + done.stderr
            removed = time.monotonic()
            while f"{gone.id} !" not in b.home.client_keys.read_text():
                assert time.monotonic() - removed < 3.0, "node-b still has the removed key after 3 s"
                await asyncio.sleep(0.05)
            # node-b closed its connection, and refuses a new one
            assert await on_b.receive(timeout=5) is None
            on_b.close()
            again = await AgentConnection.open(AgentCodec(gone), LOOPBACK, b.port)
            again.send(control.build_startup("v4.14.7"))
            assert await again.receive(timeout=5) is None
            again.close()
            # the other agent is not touched
            other.send(KEEPALIVE)
            assert await other.receive(timeout=5) == control.Ack()
            other.close()

        asyncio.run(scenario())
        assert a.query("SELECT COUNT(*) FROM agent WHERE id = ?", gone.number)[0][0] == 0
        # One removal row (node-a's); node-b added none, nor a code-6 for the connection it closed.
        rows = a.query(
            "SELECT to_status, status_code FROM agent_status_history WHERE agent_id = ? ORDER BY seq",
            gone.number,
        )
        assert [tuple(row) for row in rows][-1] == ("disconnected", 0), rows
        assert sum(1 for row in rows if row[0] == "disconnected") == 1, rows
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    assert "removed on other nodes" in b.output()
