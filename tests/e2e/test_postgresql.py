"""A real manager on PostgreSQL with real agents: statuses in the shared database, and every tool reading it
unchanged: agent_control (-l, -i, -g), agentpulse status, the query socket (incl. `global sql`), groups."""

from __future__ import annotations

import asyncio

import psycopg

from agentpulse.store.postgresql.schema import SCHEMA_VERSION
from tests.e2e.harness import ManagerProcess, run_cli
from tests.e2e.wdb_tools import FleetStats, ask, run_agent, write_keys
from tests.pgserver import PostgresServer

FLEET = 40


def test_a_manager_on_postgresql_serves_agents_and_every_tool(
    manager: ManagerProcess, postgres: PostgresServer
) -> None:
    dsn = postgres.create_database("e2e_manager")
    manager.use_postgresql(dsn)
    manager.settings.database += "<allow_sql>read-only</allow_sql>"
    keys = write_keys(manager, FLEET)
    manager.start()

    async def cli(name: str, *args: str) -> str:
        done = await asyncio.to_thread(run_cli, name, *args, home=manager.root)
        assert done.returncode == 0, (name, args, done.stderr)
        return done.stdout

    async def scenario() -> None:
        stats, stop = FleetStats(), asyncio.Event()
        agents = [asyncio.create_task(run_agent(manager, key, stop, stats)) for key in keys[:-2]]
        await manager.reach_all("active", FLEET - 2, timeout=60)
        assert await cli("agentpulse", "group", "create", "web") == "Group 'web' created.\n"
        assert (
            await cli("agentpulse", "group", "assign", "web", "1-10") == "10 agents added to group 'web'.\n"
        )

        listing = await cli("agent_control", "-l")
        assert listing.count(", Active") == FLEET - 2 + 1, listing  # the agents and the server
        assert listing.count(", Never connected") == 2
        grouped = await cli("agent_control", "-l", "-g", "web")
        assert [
            line for line in grouped.splitlines() if line.startswith("   ID: 0") and "server" not in line
        ] == [f"   ID: {n:03d}, Name: agent-{n:05d}, IP: any, Active" for n in range(1, 11)]
        info = await cli("agent_control", "-i", "001")
        assert "Active" in info and "Linux" in info, info
        cluster = await cli("agentpulse", "cluster", "status")
        assert "Nodes:\n  node01 " in cluster and "epoch 1    lease live" in cluster, cluster
        assert f"  node01           {FLEET - 2} active" in cluster, cluster
        assert "Leader (take-overs, upkeep, outbox relay): node01" in cluster, cluster
        status = await cli("agentpulse", "status", "--color", "never")
        assert f"Agents: {FLEET}" in status and "web: Active 10" in status, status

        assert (
            await asyncio.to_thread(ask, manager, b"global select-agent-name 1")
            == b'ok [{"name":"agent-00001"}]'
        )
        counted = await asyncio.to_thread(
            ask, manager, b"global sql SELECT COUNT(*) AS n FROM agent WHERE connection_status = 'active'"
        )
        assert counted == b'ok [{"n":%d}]' % (FLEET - 2 + 1)
        refused = await asyncio.to_thread(ask, manager, b"global sql DELETE FROM agent")
        assert refused is not None and refused.startswith(b"err "), refused
        stop.set()
        await asyncio.gather(*agents)
        assert stats.failures == []

    asyncio.run(scenario())
    assert not manager.home.global_db.exists()  # nothing went to SQLite
    vacuumed = run_cli("agentpulse", "db", "vacuum", home=manager.root)
    assert vacuumed.returncode == 0 and "vacuumed (by the manager)" in vacuumed.stdout, vacuumed
    checked = run_cli("agentpulse", "db", "check", home=manager.root)
    assert checked.returncode == 0 and f"ok (schema version {SCHEMA_VERSION})" in checked.stdout, checked

    assert manager.stop() == 0
    with psycopg.connect(
        dsn
    ) as conn:  # the stop wrote everything: each live agent is reset at the next start
        rows = conn.execute("SELECT COUNT(*) FROM agent_status_history WHERE to_status = 'active'").fetchone()
    assert rows is not None and rows[0] == FLEET - 2
    manager.start()  # a second run loads its view back from PostgreSQL
    manager.wait_for_all("disconnected", FLEET - 2, timeout=20)
    assert manager.status(1)[0] == "disconnected" and manager.status(FLEET) == ("never_connected", 0)
    assert manager.history(1)[:2] == [("never_connected", "pending", 0), ("pending", "active", 0)]
