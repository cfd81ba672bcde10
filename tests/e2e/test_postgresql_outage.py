"""A manager on PostgreSQL while PostgreSQL is stopped (pg_ctl stop, then start): agents keep getting their
acks, status changes made meanwhile wait in memory and are all written once it is back, the log says so once
each way; the same for three nodes under a simulated fleet, whose leases all ran out meanwhile and none of
which is taken over as dead; and a manager whose PostgreSQL cannot be reached refuses to start with one
clear line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agentpulse.cluster.localnats import LocalNatsCluster
from tests import pgserver
from tests.e2e.harness import LOOPBACK, ManagerProcess, agentpulse_bin
from tests.e2e.nodes_tools import leader, make_nodes
from tests.events.fleet import (
    as_history,
    connect_all,
    history_by_agent,
    nats_settings,
    per_agent,
    read_stream,
)
from tests.pgserver import PostgresServer

AGENTS = 30
OUTAGE = 8.0  # seconds (the 20 s is the three-node test's, below)

FLEET = 300  # simulated agents spread over three nodes
SILENT = 15  # of them go silent during the outage (swept, code 4): the simulator's lowest indices
LEAVING = 30  # and the next ones shut down (code 3)
FLEET_OUTAGE = 20.0
FAIL_AT = 15.0  # seconds into the simulation: inside the outage, which starts once every agent is active
SILENCE = 5  # agents_disconnection_time


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    why = pgserver.available()
    if why is not None:
        pytest.skip(f"no PostgreSQL for the tests: {why}")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_postgresql_stopped_acks_go_on_and_nothing_is_lost(
    manager: ManagerProcess, own_postgres: PostgresServer
) -> None:
    manager.use_postgresql(own_postgres.dsn())
    keys = manager.add_agents(AGENTS)
    manager.start()

    async def scenario() -> float:
        agents = await connect_all(manager, keys)
        await asyncio.gather(*(agent.startup() for agent in agents))
        await asyncio.gather(*(agent.keepalive() for agent in agents))
        await manager.reach_all("active", AGENTS, timeout=30)
        await asyncio.to_thread(own_postgres.pause)
        slowest = 0.0
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:  # keep-alives while the database is away: each one acked
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(agent.keepalive() for agent in agents)), 10)
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.5)
        for agent in agents[: AGENTS // 2]:
            agent.shutdown()
        await asyncio.sleep(1.5)  # the shutdowns are accepted and wait in the batch
        await asyncio.to_thread(own_postgres.resume)
        await manager.reach_all("disconnected", AGENTS // 2, timeout=30)
        for agent in agents:
            agent.close()
        return slowest

    slowest = asyncio.run(scenario())
    assert slowest < 2.0  # a round of 30 acks, on a loaded machine, never waiting for the database
    for number in range(1, AGENTS // 2 + 1):
        assert manager.history(number) == [
            ("never_connected", "pending", 0),
            ("pending", "active", 0),
            ("active", "disconnected", 3),
        ]
    output = manager.output()
    assert output.count("holding status changes in memory") == 1, output[-3000:]
    assert output.count("database writes work again") == 1


def test_a_manager_whose_postgresql_is_unreachable_refuses_to_start(manager: ManagerProcess) -> None:
    manager.use_postgresql(f"postgresql://agentpulse:secret@127.0.0.1:{pgserver.free_port()}/none")
    manager.add_agents(1)
    with pytest.raises(RuntimeError) as failed:
        manager.start()
    assert "Cannot start: PostgreSQL" in str(failed.value) and "cannot connect or migrate" in str(
        failed.value
    )
    assert "secret" not in manager.output()


def simulate(nodes: list[ManagerProcess]) -> subprocess.Popen[str]:
    """`agentpulse simulate` over the three nodes (agent i starts at node i mod 3), keep-alives every 2 s;
    at FAIL_AT the first SILENT agents go silent and the next LEAVING shut down. Ended by SIGINT."""
    managers = ",".join(f"{LOOPBACK}:{node.port}" for node in nodes)
    command = [
        agentpulse_bin("agentpulse"),
        "simulate",
        "--manager",
        managers,
        "--spread",
        "--agents",
        str(FLEET),
        "--keys",
        str(nodes[0].home.client_keys),
        "--interval",
        "2",
        "--ramp",
        "3",
        "--duration",
        "120",
        "--silent-share",
        str(SILENT / FLEET),
        "--shutdown-share",
        str(LEAVING / FLEET),
        "--fail-at",
        str(FAIL_AT),
        "--progress",
        "never",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def leases(dsn: str) -> dict[str, tuple[bool, bool]]:
    """Each node's lease: (expired, claimed), on the database's clock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, expires < clock_timestamp(), claimed_epoch >= epoch FROM cluster_node"
        ).fetchall()
    return {str(row[0]): (bool(row[1]), bool(row[2])) for row in rows}


def expected_history(number: int) -> list[tuple[str, str, int]]:
    rows = [("never_connected", "pending", 0), ("pending", "active", 0)]
    if number <= SILENT:
        rows.append(("active", "disconnected", 4))
    elif number <= SILENT + LEAVING:
        rows.append(("active", "disconnected", 3))
    return rows


def outage_under_the_fleet(
    nodes: list[ManagerProcess], server: PostgresServer, dsn: str
) -> tuple[dict[str, object], float]:
    """Run the fleet through the outage; its summary, and seconds from PostgreSQL's return to every
    status change of the outage in the database."""
    first = nodes[0]
    sim = simulate(nodes)
    try:
        started = time.monotonic()
        first.wait_for_all("active", FLEET, timeout=FAIL_AT - 3)
        server.pause()
        paused = time.monotonic()
        assert paused - started < FAIL_AT - 1, "the outage must start before the agents fail"
        time.sleep(max(0.0, paused + FLEET_OUTAGE - time.monotonic()))
        server.resume()
        back = time.monotonic()
        deadline = back + 30
        while True:
            counts = Counter(first.statuses().values())
            if counts[("disconnected", 4)] == SILENT and counts[("disconnected", 3)] == LEAVING:
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.2)
        caught_up = time.monotonic() - back
        deadline = time.monotonic() + 15
        while not (
            leader(dsn) and leases(dsn) == {node.settings.node_name: (False, False) for node in nodes}
        ):
            assert time.monotonic() < deadline, (leader(dsn), leases(dsn))
            time.sleep(0.2)
        time.sleep(3.0 + 2.0 + 2.0)  # the leader's claims resume (ttl + grace after its lease came back)
        assert leases(dsn) == {node.settings.node_name: (False, False) for node in nodes}
        history = history_by_agent(first)  # no code 6: nobody was taken over, nobody lost a connection
        for number in range(1, FLEET + 1):
            assert [row[1:] for row in history[f"{number:03d}"]] == expected_history(number), number
    finally:
        sim.send_signal(signal.SIGINT)
        stdout, stderr = sim.communicate(timeout=60)
    assert stdout, stderr
    return json.loads(stdout), caught_up


def test_postgresql_stopped_20_s_under_three_nodes_nothing_lost_and_no_node_taken_over(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    nats = LocalNatsCluster(tmp_path / "nats", 1)
    nats.start()
    dsn = own_postgres.create_database("outage_nodes")
    nodes, _ = make_nodes(
        tmp_path,
        dsn,
        ["a", "b", "c"],
        FLEET,
        lambda name: nats_settings(
            nats.url, node_name=f"node-{name}", connection_grace=2.0, disconnection_time=str(SILENCE)
        ),
    )
    try:
        for node in nodes:
            node.start()
        summary, caught_up = outage_under_the_fleet(nodes, own_postgres, dsn)
        assert summary["connected"] == FLEET and summary["failovers"] == 0, summary
        assert summary["failed"] == {"silent": SILENT, "shutdown": LEAVING}, summary
        # Acks went on while the database was away: no keep-alive waited anywhere near the outage.
        latency = summary["ack_latency_ms"]
        assert isinstance(latency, dict) and latency["max"] < FLEET_OUTAGE * 1000 / 4, summary
        assert summary["errors"] == 0 and summary["keepalives_acked"] == summary["keepalives_sent"], summary
        assert caught_up < 15, caught_up
        for node in nodes:
            output = node.output()
            assert output.count("holding status changes in memory") == 1, output[-3000:]
            assert output.count("database writes work again") == 1, output[-3000:]
            assert "takes over its agents" not in output, output[-3000:]
            name = node.settings.node_name
            assert output.count(f"Cluster lease of node {name} not renewed") == 1, output[-3000:]
            assert output.count(f"Cluster lease of node {name} renewed again") == 1, output[-3000:]
        # Events complete: every history row (the closes at the simulator's end included) once in the stream.
        nodes[0].wait_for_all("disconnected", FLEET, timeout=20)
        time.sleep(1.0)  # the last flushes
        history = history_by_agent(nodes[0])
        rows = sum(len(agent_rows) for agent_rows in history.values())
        events = per_agent(asyncio.run(read_stream(nats.url, at_least=rows, timeout=30)))
        assert {agent: as_history(agent_events) for agent, agent_events in events.items()} == history
    finally:
        for node in nodes:
            node.stop()
        nats.stop()
