"""Issue 16's fleet test: three real nodes on one PostgreSQL and one NATS server, a simulated fleet spread
over them (each agent lists the three), one node killed with SIGKILL. Its agents reconnect to the others
inside the grace; sampled every 200 ms, neither the database nor the status stream ever shows an agent
disconnected; and the stream then holds every history row exactly once (none duplicated, none missing).

600 agents in the suite (about 40 s of wall time on 2 shared cores); 3,000 in the `load` run."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js import api as js_api

from agentpulse.cluster.localnats import LocalNatsCluster
from tests.e2e.harness import LOOPBACK, ManagerProcess, agentpulse_bin
from tests.e2e.wdb_tools import write_keys
from tests.events.fleet import (
    as_history,
    history_by_agent,
    nats_client,
    nats_settings,
    per_agent,
)
from tests.pgserver import PostgresServer

GRACE = 6.0
LEASE_TTL = 3.0


class LatestStatus:
    """Each agent's latest status event as the stream says (the highest sequence seen)."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, str]] = {}
        self.events = 0

    async def on_status(self, msg: Msg) -> None:
        event: dict[str, Any] = json.loads(msg.data)
        self.events += 1
        agent, sequence = event["agent_id"], int(event["sequence"])
        if sequence > self.latest.get(agent, (0, ""))[0]:
            self.latest[agent] = (sequence, event["status"])

    def disconnected(self) -> list[str]:
        return [agent for agent, (_, status) in self.latest.items() if status == "disconnected"]


async def read_all(url: str, at_least: int, timeout: float = 30.0) -> list[Msg]:
    """Every message of the status stream, once it holds `at_least`: an ordered consumer that needs no
    acknowledgements (read_stream's default consumer stops at 1,000 unacknowledged messages)."""
    nc = await nats_client(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while (count := (await js.stream_info("AGENT_STATUS")).state.messages) < at_least:
            assert time.monotonic() < deadline, f"the stream holds {count} messages, expected {at_least}"
            await asyncio.sleep(0.2)
        sub = await js.pull_subscribe(
            "",
            stream="AGENT_STATUS",
            config=js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.ALL, ack_policy=js_api.AckPolicy.NONE
            ),
        )
        messages: list[Msg] = []
        while len(messages) < count:
            assert time.monotonic() < deadline + timeout, f"read {len(messages)} of {count}"
            messages.extend(await sub.fetch(min(1000, count - len(messages)), timeout=10))
        return messages
    finally:
        await nc.close()


def count_status(node: ManagerProcess, status: str) -> int:
    return int(node.query("SELECT COUNT(*) FROM agent WHERE id > 0 AND connection_status = ?", status)[0][0])


def run_fleet(tmp_path: Path, postgres: PostgresServer, agents: int, database: str) -> None:
    nats = LocalNatsCluster(tmp_path / "nats", 1)
    nats.start()
    dsn = postgres.create_database(database)
    nodes = [
        ManagerProcess(
            tmp_path / name,
            nats_settings(nats.url, node_name=f"node-{name}", connection_grace=GRACE, flush_interval=0.2),
        )
        for name in "abc"
    ]
    for node in nodes:
        node.use_postgresql(dsn)
    write_keys(nodes[0], agents)
    for node in nodes[1:]:
        node.home.create_layout()
        shutil.copy(nodes[0].home.client_keys, node.home.client_keys)
    a, b, c = nodes
    simulator: subprocess.Popen[str] | None = None
    try:
        for node in nodes:
            node.start()
        command = [
            agentpulse_bin("agentpulse"),
            "simulate",
            *(arg for node in nodes for arg in ("--manager", f"{LOOPBACK}:{node.port}")),
            "--spread",
            "--agents",
            str(agents),
            "--keys",
            str(a.home.client_keys),
            "--interval",
            "2",
            "--ramp",
            "5",
            "--duration",
            "300",  # ended by SIGINT
            "--retry-interval",
            "0.2",
            "--progress",
            "never",
        ]
        simulator = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        async def scenario() -> None:
            await a.reach_all("active", agents, timeout=90)
            held = a.query("SELECT node_name, COUNT(*) FROM agent_runtime GROUP BY node_name ORDER BY 1")
            assert {row[0]: row[1] for row in held} == {
                "node-a": pytest.approx(agents / 3, abs=agents // 20),
                "node-b": pytest.approx(agents / 3, abs=agents // 20),
                "node-c": pytest.approx(agents / 3, abs=agents // 20),
            }, held
            watch = LatestStatus()
            nc = await nats_client(nats.url)
            try:
                await nc.subscribe("agent.status.*", cb=watch.on_status)
                await nc.flush()
                c.kill()
                killed = time.monotonic()
                seen_db: list[int] = []
                seen_stream: set[str] = set()
                while time.monotonic() - killed < LEASE_TTL + GRACE + 3.0:
                    seen_db.append(await asyncio.to_thread(count_status, a, "disconnected"))
                    seen_stream |= set(watch.disconnected())
                    await asyncio.sleep(0.2)
                assert set(seen_db) == {0}, Counter(seen_db)
                assert seen_stream == set(), sorted(seen_stream)[:20]
            finally:
                await nc.close()
            assert count_status(a, "active") == agents
            holders = a.query("SELECT DISTINCT node_name FROM agent_runtime ORDER BY 1")
            assert [row[0] for row in holders] == ["node-a", "node-b"]

        asyncio.run(scenario())
        simulator.send_signal(signal.SIGINT)
        simulator.communicate(timeout=60)
        simulator = None

        async def drained() -> None:
            deadline = time.monotonic() + GRACE + 30
            while True:
                live = count_status(a, "active") + count_status(a, "pending")
                unsent = a.query("SELECT COUNT(*) FROM event_outbox")[0][0]
                if not live and not unsent:
                    return
                assert time.monotonic() < deadline, f"not drained: {live} agents live, {unsent} events unsent"
                await asyncio.sleep(0.5)

        asyncio.run(drained())
        history = history_by_agent(a)
        rows = sum(len(agent_rows) for agent_rows in history.values())
        messages = asyncio.run(read_all(nats.url, rows))
        ids = Counter(msg.headers["Nats-Msg-Id"] for msg in messages if msg.headers is not None)
        assert [msg_id for msg_id, n in ids.items() if n > 1] == []
        events = per_agent(messages)
        assert {agent: as_history(agent_events) for agent, agent_events in events.items()} == history
    finally:
        if simulator is not None:
            simulator.kill()
            simulator.communicate()
        for node in (a, b):
            if node.process is not None:
                assert node.stop() == 0
        if c.process is not None:
            c.kill()
        nats.stop()


def test_three_nodes_600_agents_one_killed_no_agent_ever_disconnected(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    run_fleet(tmp_path, postgres, 600, "e2e_fleet_600")


@pytest.mark.load
def test_three_nodes_3000_agents_one_killed_no_agent_ever_disconnected(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    run_fleet(tmp_path, postgres, 3000, "e2e_fleet_3000")
