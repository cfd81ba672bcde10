"""Two real nodes on one PostgreSQL: a node's view follows, from the database, the agents the other node
holds (`cluster/holders.py`), and finds there a binding whose notification it missed.

- Agents that only ever talk to node-b: node-a's view (its /metrics) shows them active, then
  disconnected, each within a couple of seconds of node-b's commit.
- node-a's connection of an agent is quiet when node-b binds the agent while node-a's listening
  connection is down (its session terminated): node-a finds node-b's binding in the database and closes
  its connection as overtaken, as the notification would have had it do.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg

from tests.e2e.harness import ManagerProcess
from tests.e2e.test_metrics import scrape, total
from tests.e2e.test_nodes_follow import connect, disconnected_on, live_on, two_nodes
from tests.e2e.wdb_tools import FleetStats, run_agent
from tests.pgserver import PostgresServer

FLEET = 6
FOLLOWED_WITHIN = 2.0  # seconds from node-b's commit to node-a's view


def statuses_on(metrics_port: int) -> dict[str, float]:
    samples = scrape(metrics_port)
    return {
        status: total(samples, "agentpulse_agents", status=status)
        for status in ("never_connected", "pending", "active", "disconnected")
    }


async def until(check: object, what: str, timeout: float) -> float:
    """Poll `check()` (run in a thread) until true; seconds it took."""
    start = time.monotonic()
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        assert time.monotonic() - start < timeout, what
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def all_in_database(node: ManagerProcess, status: str) -> bool:
    return sum(1 for seen, _ in node.statuses().values() if seen == status) >= FLEET


def test_a_node_s_view_of_agents_held_by_another_node_follows_their_status(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Without the feed node-a's view keeps them never connected (nobody told it): it fails here."""
    a, b, keys, metrics = two_nodes(tmp_path, postgres, "e2e_holders_follow", FLEET)
    a.start()
    b.start()
    try:

        async def scenario() -> None:
            stats, stop = FleetStats(), asyncio.Event()
            agents = [asyncio.create_task(run_agent(b, key, stop, stats, interval=0.5)) for key in keys]
            await until(lambda: all_in_database(b, "active"), "node-b's agents not active", 30)
            await until(
                lambda: live_on(metrics) == FLEET,
                f"node-a's view does not have node-b's agents live: {statuses_on(metrics)}",
                FOLLOWED_WITHIN,
            )
            stop.set()  # each closes its connection to node-b: code 6 there after the grace
            await asyncio.gather(*agents)
            assert not stats.failures, stats.failures
            await until(lambda: all_in_database(b, "disconnected"), "node-b's agents not disconnected", 30)
            await until(
                lambda: disconnected_on(metrics) == FLEET,
                f"node-a's view does not follow node-b's disconnections: {statuses_on(metrics)}",
                FOLLOWED_WITHIN,
            )

        asyncio.run(scenario())
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    # node-a wrote nothing of them: node-b's rows only (pending, active, disconnected each)
    rows = a.query("SELECT COUNT(*) FROM agent_status_history WHERE status_code = 6")
    assert rows[0][0] == FLEET


def terminate_listener(dsn: str, node: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (f"agentpulse:{node}:bindings",),
        ).fetchall()
    return len(rows)


def test_a_binding_whose_notification_was_missed_is_found_in_the_database(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Without the catch-up node-a never hears of node-b's binding: its quiet connection stays open."""
    a, b, keys, _ = two_nodes(tmp_path, postgres, "e2e_holders_missed", 1, overtake_time=1)
    a.start()
    b.start()
    key = keys[0]
    try:

        async def scenario() -> None:
            on_a = await connect(a, key)
            await a.reach(key.number, "active", timeout=10)
            await asyncio.sleep(1.5)  # quiet for longer than the overtake time
            assert b.pg_dsn is not None
            assert await asyncio.to_thread(terminate_listener, b.pg_dsn, "node-a") == 1
            on_b = await connect(b, key)  # node-b binds it at its next flush: nobody hears it on node-a
            assert await on_a.receive(timeout=4) is None, "node-a kept its quiet connection"
            on_a.close()
            await a.reach(key.number, "active", timeout=5)  # node-b's, in the database
            on_b.close()

        asyncio.run(scenario())
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    output = a.output()
    assert "the notification was missed" in output, output[-3000:]
    assert "Agent disconnected" not in output
    rows = a.query("SELECT COUNT(*) FROM agent_status_history WHERE status_code = 6")
    assert rows[0][0] == 0
