"""Two real manager processes on one PostgreSQL, one client.keys: a node that starts leaves the agents the
other node holds as they are (no code-5 reset of another node's agents), both hold leases and one leads,
and when the leader is killed with SIGKILL the other leads within 2 s."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import psycopg

from agentpulse.cluster import sql
from tests.e2e.harness import ManagerProcess, ManagerSettings, run_cli
from tests.e2e.wdb_tools import FleetStats, run_agent, write_keys
from tests.pgserver import PostgresServer

FLEET = 20


def leader(dsn: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.LOCK_HOLDER, (sql.SWEEPER_LOCK, sql.SWEEPER_LOCK)).fetchone()
    return str(row[0]).split(":")[1] if row else None


def test_a_second_node_keeps_the_first_ones_agents_and_takes_the_lead_within_2_s_of_a_sigkill(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    dsn = postgres.create_database("e2e_nodes")
    a = ManagerProcess(tmp_path / "a", ManagerSettings(node_name="node-a", connection_grace=2.0))
    b = ManagerProcess(
        tmp_path / "b",
        ManagerSettings(
            node_name="node-b", connection_grace=2.0, sections="<cluster><lease_ttl>7</lease_ttl></cluster>"
        ),
    )
    a.use_postgresql(dsn)
    b.use_postgresql(dsn)
    keys = write_keys(a, FLEET)
    b.home.create_layout()
    shutil.copy(a.home.client_keys, b.home.client_keys)
    a.start()
    try:

        async def scenario() -> None:
            stats, stop = FleetStats(), asyncio.Event()
            agents = [asyncio.create_task(run_agent(a, key, stop, stats, interval=1.0)) for key in keys]
            await a.reach_all("active", FLEET, timeout=60)
            await asyncio.to_thread(b.start)
            await asyncio.sleep(1.5)  # b's start-up reset (if any) is flushed by now
            statuses = a.statuses()
            assert sorted(statuses.values()) == [("active", 0)] * FLEET, statuses
            holders = a.query("SELECT DISTINCT node_name FROM agent_runtime WHERE node_name IS NOT NULL")
            assert [row[0] for row in holders] == ["node-a"]

            done = await asyncio.to_thread(run_cli, "agentpulse", "cluster", "status", "--json", home=a.root)
            report = json.loads(done.stdout)
            assert done.returncode == 0, done.stdout + done.stderr
            assert {node["name"]: node["expired"] for node in report["nodes"]} == {
                "node-a": False,
                "node-b": False,
            }
            assert report["leader"] == "node-a"  # the first to start
            assert report["agents_by_node"]["node-a"] == {"active": FLEET}
            # Each node's lease lasts its own <cluster><lease_ttl> past its renewal (default 3 s).
            ttls = a.query("SELECT name, EXTRACT(EPOCH FROM expires - renewed) FROM cluster_node ORDER BY 1")
            assert [(name, round(float(ttl), 1)) for name, ttl in ttls] == [("node-a", 3.0), ("node-b", 7.0)]

            a.kill()
            killed = time.monotonic()
            while leader(dsn) != "node-b":
                assert time.monotonic() - killed < 2.0, f"no new leader 2 s after the kill: {leader(dsn)}"
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*agents)

        asyncio.run(scenario())
    finally:
        if a.process is not None:
            a.kill()
        assert b.stop() == 0


def test_a_killed_nodes_agents_that_move_stay_live_and_the_others_get_code_6_once(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """kill -9 of node-a: its agents 1-10 reconnect to node-b inside connection_grace and are never seen
    disconnected (the database sampled every 200 ms); agents 11-20 do not come back and are all code 6
    within lease expiry (3 s) + grace + 1 s of the kill, each with exactly one code-6 history row."""
    grace = 2.0
    dsn = postgres.create_database("e2e_nodes_takeover")
    a = ManagerProcess(tmp_path / "a", ManagerSettings(node_name="node-a", connection_grace=grace))
    b = ManagerProcess(tmp_path / "b", ManagerSettings(node_name="node-b", connection_grace=grace))
    a.use_postgresql(dsn)
    b.use_postgresql(dsn)
    keys = write_keys(a, FLEET)
    b.home.create_layout()
    shutil.copy(a.home.client_keys, b.home.client_keys)
    a.start()
    b.start()
    movers, stayers = keys[:10], keys[10:]
    try:

        async def scenario() -> None:
            stats, on_a, on_b = FleetStats(), asyncio.Event(), asyncio.Event()
            first = [asyncio.create_task(run_agent(a, key, on_a, stats, interval=0.5)) for key in keys]
            await a.reach_all("active", FLEET, timeout=60)
            a.kill()
            killed = time.monotonic()
            on_a.set()
            await asyncio.gather(*first)
            second = [asyncio.create_task(run_agent(b, key, on_b, stats, interval=0.5)) for key in movers]
            seen_disconnected: set[int] = set()
            closed_at: float | None = None
            while time.monotonic() - killed < 3.0 + grace + 3.0:
                statuses = b.statuses()
                seen_disconnected |= {
                    key.number for key in movers if statuses[key.number][0] == "disconnected"
                }
                if closed_at is None and all(statuses[key.number] == ("disconnected", 6) for key in stayers):
                    closed_at = time.monotonic() - killed
                await asyncio.sleep(0.2)
            assert seen_disconnected == set(), seen_disconnected
            assert closed_at is not None and closed_at <= 3.0 + grace + 1.0, closed_at
            on_b.set()
            await asyncio.gather(*second)

        asyncio.run(scenario())
        sixes = b.query(
            "SELECT agent_id, COUNT(*) FROM agent_status_history WHERE status_code = 6 GROUP BY agent_id "
            "ORDER BY agent_id"
        )
        assert [tuple(row) for row in sixes] == [(key.number, 1) for key in stayers]
        holders = b.query("SELECT agent_id, node_name FROM agent_runtime WHERE agent_id <= 10 ORDER BY 1")
        assert [tuple(row) for row in holders] == [(key.number, "node-b") for key in movers]
    finally:
        if a.process is not None:
            a.kill()
        assert b.stop() == 0


def test_agents_moving_between_live_nodes_inside_the_grace_never_show_disconnected(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Both nodes stay up; 10 agents drop their connection to node-a and connect to node-b at once. node-a's
    grace (2 s) then ends for each, but node-b holds them by then: the database (sampled every 200 ms)
    never shows them disconnected and node-a's late code-6 rows are not written."""
    grace = 2.0
    dsn = postgres.create_database("e2e_nodes_move")
    a = ManagerProcess(tmp_path / "a", ManagerSettings(node_name="node-a", connection_grace=grace))
    b = ManagerProcess(tmp_path / "b", ManagerSettings(node_name="node-b", connection_grace=grace))
    a.use_postgresql(dsn)
    b.use_postgresql(dsn)
    keys = write_keys(a, 10)
    b.home.create_layout()
    shutil.copy(a.home.client_keys, b.home.client_keys)
    a.start()
    b.start()
    try:

        async def scenario() -> None:
            stats, on_a, on_b = FleetStats(), asyncio.Event(), asyncio.Event()
            first = [asyncio.create_task(run_agent(a, key, on_a, stats, interval=0.5)) for key in keys]
            await a.reach_all("active", 10, timeout=60)
            on_a.set()  # each closes its connection to node-a (no shutdown message)
            await asyncio.gather(*first)
            moved = time.monotonic()
            second = [asyncio.create_task(run_agent(b, key, on_b, stats, interval=0.5)) for key in keys]
            seen: set[int] = set()
            while time.monotonic() - moved < grace + 2.0:
                seen |= {n for n, (status, _) in a.statuses().items() if status == "disconnected"}
                await asyncio.sleep(0.2)
            assert seen == set(), seen
            on_b.set()
            await asyncio.gather(*second)

        asyncio.run(scenario())
        assert a.query("SELECT COUNT(*) FROM agent_status_history WHERE status_code = 6")[0][0] == 0
        holders = a.query("SELECT DISTINCT node_name FROM agent_runtime WHERE node_name IS NOT NULL")
        assert [row[0] for row in holders] == ["node-b"]
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_an_agent_enrolled_on_one_node_connects_to_another_within_a_second_or_so(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    from agentpulse.wire import enrolment
    from agentpulse.wire.keys import parse_line
    from tests.e2e.test_enrolment import KEY_REPLY, exchange

    dsn = postgres.create_database("e2e_nodes_keys")
    a = ManagerProcess(tmp_path / "a", ManagerSettings(node_name="node-a", auth=""))
    b = ManagerProcess(tmp_path / "b", ManagerSettings(node_name="node-b"))
    a.use_postgresql(dsn)
    b.use_postgresql(dsn)
    a.start()
    b.start()
    try:

        async def scenario() -> None:
            reply = await exchange(a, enrolment.build_request("web-01"))
            enrolled = time.monotonic()
            match = KEY_REPLY.search(reply)
            assert match is not None, reply
            key = parse_line(b" ".join(match.groups()).decode(), 1)
            assert key is not None
            while str(key.number).zfill(3) + " web-01" not in b.home.client_keys.read_text():
                assert time.monotonic() - enrolled < 1.5, "node-b lacks the key 1.5 s after the enrolment"
                await asyncio.sleep(0.05)
            stats, stop = FleetStats(), asyncio.Event()
            agent = asyncio.create_task(run_agent(b, key, stop, stats))
            await b.reach(key.number, "active", timeout=10)
            stop.set()
            await agent
            assert stats.failures == [], stats.failures

        asyncio.run(scenario())
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
