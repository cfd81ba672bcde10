"""Status events from two real nodes on one PostgreSQL and one NATS server, through a kill -9 of the first
node (the leader, whose relay publishes the shared outbox): half its agents move to the second node
inside the grace, the other half get code 6 from the new leader. The stream then holds every row of
each agent's history exactly once, in sequence order, whichever node wrote it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from agentpulse.cluster.localnats import LocalNatsCluster
from tests.e2e.harness import ManagerProcess
from tests.e2e.wdb_tools import FleetStats, run_agent, write_keys
from tests.events.fleet import as_history, history_by_agent, nats_settings, per_agent, read_stream
from tests.pgserver import PostgresServer

FLEET = 20
GRACE = 2.0


def test_one_ordered_event_history_per_agent_across_a_node_kill(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    nats = LocalNatsCluster(tmp_path / "nats", 1)
    nats.start()
    dsn = postgres.create_database("e2e_nodes_events")
    a = ManagerProcess(tmp_path / "a", nats_settings(nats.url, node_name="node-a", connection_grace=GRACE))
    b = ManagerProcess(tmp_path / "b", nats_settings(nats.url, node_name="node-b", connection_grace=GRACE))
    a.use_postgresql(dsn)
    b.use_postgresql(dsn)
    keys = write_keys(a, FLEET)
    b.home.create_layout()
    shutil.copy(a.home.client_keys, b.home.client_keys)
    try:
        a.start()
        b.start()

        async def scenario() -> None:
            stats, on_a, on_b = FleetStats(), asyncio.Event(), asyncio.Event()
            first = [asyncio.create_task(run_agent(a, key, on_a, stats, interval=0.5)) for key in keys]
            await a.reach_all("active", FLEET, timeout=60)
            a.kill()
            on_a.set()
            await asyncio.gather(*first)
            movers = keys[: FLEET // 2]
            second = [asyncio.create_task(run_agent(b, key, on_b, stats, interval=0.5)) for key in movers]
            await b.reach_all("active", FLEET // 2, timeout=30)
            await b.reach_all("disconnected", FLEET // 2, timeout=3.0 + GRACE + 5)
            on_b.set()
            await asyncio.gather(*second)

        asyncio.run(scenario())
        assert b.stop() == 0  # its last flush, and its relay drains the outbox
        history = history_by_agent(b)
        rows = sum(len(agent_rows) for agent_rows in history.values())
        events = per_agent(asyncio.run(read_stream(nats.url, at_least=rows, timeout=20)))
        assert {agent: as_history(agent_events) for agent, agent_events in events.items()} == history
        sixes = [agent for agent, agent_rows in history.items() if any(row[3] == 6 for row in agent_rows)]
        assert len(sixes) == FLEET // 2
    finally:
        for node in (a, b):
            if node.process is not None:
                node.kill()
        nats.stop()
