"""`agentpulse cluster status` against real things: a single SQLite node, a PostgreSQL with leases and a
leader, a 3-server NATS cluster with one server killed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from agentpulse.cluster.leader import LeaderElection
from agentpulse.cluster.lease import NodeLease, claim_expired, connect
from agentpulse.cluster.localnats import LocalNatsCluster
from tests.e2e.harness import ManagerProcess, ManagerSettings, run_cli, wait_until
from tests.events.natsserver import wait_for_replicated_streams


async def status(home: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentpulse",
        "cluster",
        "status",
        "--home",
        str(home),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), output.decode()


def test_a_single_sqlite_node_says_it_is_not_a_cluster(tmp_path: Path) -> None:
    manager = ManagerProcess(tmp_path / "ossec")
    manager.add_agents(3)
    manager.start()
    manager.wait_for_all("never_connected", 3)
    manager.stop()
    done = run_cli("agentpulse", "cluster", "status", "--home", str(manager.root), home=manager.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Single node node01 on SQLite (")
    assert "not a cluster; no leases, no leader election" in done.stdout
    assert "3 never_connected" in done.stdout
    assert "NATS is disabled" in done.stdout


def test_nodes_leases_and_the_leader_from_postgresql(dsn: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        live = NodeLease(dsn, "node-a", interval=0.2, ttl=1.0)
        dead = NodeLease(dsn, "node-b", interval=0.2, ttl=1.0)
        await live.start()
        await dead.start()
        await dead.stop(release=False)
        leader = LeaderElection(dsn, "node-a")
        leader.start()
        while not leader.leader:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.2)  # node-b's lease expires

        code, output = await status(tmp_path, "--dsn", dsn, "--json")
        report = json.loads(output)
        assert code == 1, output  # node-b expired and no survivor took its agents over
        assert report["database"]["kind"] == "postgresql" and report["database"]["up"]
        assert report["leader"] == "node-a"
        nodes = {node["name"]: node for node in report["nodes"]}
        assert (nodes["node-a"]["expired"], nodes["node-b"]["expired"]) == (False, True)
        assert nodes["node-b"]["claimed"] is False
        assert "no agent table" in report["agents_note"]

        conn = await connect(dsn, "survivor")
        assert [lease.name for lease in await claim_expired(conn)] == ["node-b"]
        await conn.close()
        code, output = await status(tmp_path, "--dsn", dsn)
        assert code == 0, output
        assert "Leader (take-overs, upkeep, outbox relay): node-a" in output
        assert "EXPIRED, agents taken over" in output
        await leader.stop()
        await live.stop()

    asyncio.run(scenario())


def test_a_killed_nats_server_shows_down_and_the_stream_keeps_its_replicas(tmp_path: Path) -> None:
    cluster = LocalNatsCluster(tmp_path / "nats", 3)
    cluster.start()
    try:
        wait_for_replicated_streams(cluster.urls, 3)
        settings = ManagerSettings(
            nats=f"<nats><enabled>yes</enabled><url>{cluster.url}</url><replicas>3</replicas></nats>"
        )
        manager = ManagerProcess(tmp_path / "ossec", settings)
        manager.start()  # creates the R3 stream
        wait_until(
            lambda: "Status events: publishing" in manager.output(),
            "the stream",
            timeout=60,  # an R3 creation retried (5 s JetStream API timeout, back-off) under a loaded suite
            detail=lambda: manager.output()[-4000:] + "\n" + cluster.logs()[-4000:],
        )
        manager.stop()
        home = manager.root
        code, output = asyncio.run(status(home))
        assert code == 0, output
        assert output.count(" up: server n") == 3
        assert "Stream AGENT_STATUS: 3 replica(s)" in output
        assert "Stream AGENT_EVENTS: 3 replica(s)" in output  # agent events' stream (on by default)

        cluster.kill(1)
        code, output = asyncio.run(status(home))
        assert code == 1, output
        assert f"{cluster.urls[1]:<28} DOWN" in output
        assert "Traceback" not in output  # nats-py prints one per error unless given an error callback
        assert output.count(" up: server n") == 2
        assert "Stream AGENT_STATUS: 3 replica(s)" in output
        assert "Stream AGENT_EVENTS: 3 replica(s)" in output
    finally:
        cluster.stop()
