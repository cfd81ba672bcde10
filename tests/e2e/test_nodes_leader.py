"""Three real nodes on one PostgreSQL and one NATS server; the leader (claims, upkeep, the outbox relay) is
killed with SIGKILL (issue 16: "kill the sweeper leader: a silent agent is still swept within
agents_disconnection_time + 3 s").

At the kill one agent on each surviving node goes silent (its connection left open) and the killed node's
agents do not come back. The silent ones are swept by their own node (code 4), the killed node's are taken
over by the new leader (code 6), each within agents_disconnection_time + 3 s and exactly once; a new leader
holds the lock within 2 s, and its relay carries on: the stream holds every history row of every agent
exactly once, the rows written after the kill included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentpulse.cluster.localnats import LocalNatsCluster
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import ManagerProcess
from tests.e2e.nodes_tools import leader, make_nodes
from tests.events.fleet import (
    Agent,
    as_history,
    connect_all,
    history_by_agent,
    nats_settings,
    per_agent,
    read_stream,
)
from tests.pgserver import PostgresServer

PER_NODE = 4
GRACE = 2.0
SILENCE = 5.0  # agents_disconnection_time
BOUND = SILENCE + 3.0  # the issue's
INTERVAL = 0.5  # the agents' keep-alives


async def keep_alive(agent: Agent, until: asyncio.Event, last_ack: dict[int, float]) -> None:
    while not until.is_set():
        await agent.keepalive()
        last_ack[agent.key.number] = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), INTERVAL)


@dataclass
class Fleet:
    """Wire-level agents, each on its node, each keeping alive until told to be quiet."""

    agents: dict[int, Agent] = field(default_factory=dict)
    quiet: dict[int, asyncio.Event] = field(default_factory=dict)
    pumps: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    last_ack: dict[int, float] = field(default_factory=dict)

    async def connect(self, nodes: list[ManagerProcess], placed: dict[str, list[AgentKey]]) -> None:
        for node in nodes:
            for agent in await connect_all(node, placed[node.settings.node_name]):
                self.agents[agent.key.number] = agent
        await asyncio.gather(*(agent.startup() for agent in self.agents.values()))
        await asyncio.gather(*(agent.keepalive() for agent in self.agents.values()))  # active

    def pump(self) -> None:
        for number, agent in self.agents.items():
            self.quiet[number] = asyncio.Event()
            self.pumps[number] = asyncio.create_task(keep_alive(agent, self.quiet[number], self.last_ack))

    async def hush(self, numbers: list[int]) -> None:
        """No more keep-alives from these (their connections stay open)."""
        for number in numbers:
            self.quiet[number].set()
        await asyncio.gather(*(self.pumps[number] for number in numbers))

    async def leave(self, numbers: list[int]) -> None:
        await self.hush(numbers)
        for number in numbers:
            self.agents[number].shutdown()


async def wait_for_new_leader(dsn: str, killed: float) -> str:
    while True:
        holder = await asyncio.to_thread(leader, dsn)
        if holder in ("node-b", "node-c"):
            return holder
        assert time.monotonic() - killed < 2.0, f"no new leader 2 s after the kill: {holder}"
        await asyncio.sleep(0.05)


async def wait_for_disconnections(
    node: ManagerProcess, fleet: Fleet, silent: list[int], gone: list[int], killed: float
) -> dict[int, float]:
    """Seconds until each silent agent is code 4 (from its last ack) and each gone one code 6 (from the kill)."""
    done_at: dict[int, float] = {}
    while len(done_at) < len(silent) + len(gone):
        statuses = await asyncio.to_thread(node.statuses)
        assert time.monotonic() - killed < BOUND + 5, (statuses, done_at)
        now = time.monotonic()
        for number in silent:
            if statuses[number] == ("disconnected", 4):
                done_at.setdefault(number, now - fleet.last_ack[number])
        for number in gone:
            if statuses[number] == ("disconnected", 6):
                done_at.setdefault(number, now - killed)
        await asyncio.sleep(0.1)
    return done_at


async def kill_the_leader(
    nodes: list[ManagerProcess], placed: dict[str, list[AgentKey]], dsn: str
) -> tuple[str, dict[int, float]]:
    a, b, _ = nodes
    on_a, on_b, on_c = placed["node-a"], placed["node-b"], placed["node-c"]
    silent = [on_b[0].number, on_c[0].number]  # one on each survivor: the new leader's and the follower's
    gone = [key.number for key in on_a]
    fleet = Fleet()
    await fleet.connect(nodes, placed)
    await a.reach_all("active", 3 * PER_NODE, timeout=30)
    assert await asyncio.to_thread(leader, dsn) == "node-a"
    fleet.pump()
    await asyncio.sleep(2.0)  # every agent acked a few times on its node

    await fleet.hush([*gone, *silent])
    a.kill()
    killed = time.monotonic()
    for number in gone:
        fleet.agents[number].close()
    new_leader = await wait_for_new_leader(dsn, killed)
    await fleet.leave([on_b[1].number, on_c[1].number])  # rows written after the kill, by both survivors
    done_at = await wait_for_disconnections(b, fleet, silent, gone, killed)
    await asyncio.sleep(SILENCE + 1.0)  # more sweeps and claim rounds: nothing is done twice
    await fleet.leave([key.number for key in [*on_b[2:], *on_c[2:]]])
    await b.reach_all("disconnected", 3 * PER_NODE, timeout=10)
    for key in [*on_b, *on_c]:
        fleet.agents[key.number].close()
    await asyncio.sleep(GRACE + 1.0)  # the closes' grace ends: nothing more is written
    return new_leader, done_at


def test_a_killed_leader_its_agents_code_6_a_silent_agent_swept_and_events_relayed_by_the_next(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    nats = LocalNatsCluster(tmp_path / "nats", 1)
    nats.start()
    dsn = postgres.create_database("e2e_nodes_leader")
    nodes, keys = make_nodes(
        tmp_path,
        dsn,
        ["a", "b", "c"],
        3 * PER_NODE,
        lambda name: nats_settings(
            nats.url, node_name=f"node-{name}", connection_grace=GRACE, disconnection_time=f"{SILENCE:g}"
        ),
    )
    _, b, c = nodes
    placed = {
        node.settings.node_name: keys[i * PER_NODE : (i + 1) * PER_NODE] for i, node in enumerate(nodes)
    }
    try:
        for node in nodes:  # node-a first: the leader
            node.start()
        new_leader, done_at = asyncio.run(kill_the_leader(nodes, placed, dsn))
        assert max(done_at.values()) <= BOUND, done_at
        history = history_by_agent(b)
        disconnections = {
            int(agent): [row[3] for row in rows if row[2] == "disconnected"]
            for agent, rows in history.items()
        }
        on_a, on_b, on_c = placed["node-a"], placed["node-b"], placed["node-c"]
        for key in (on_b[0], on_c[0]):
            assert disconnections[key.number] == [4], history  # swept once, by its own node
        for key in on_a:
            assert disconnections[key.number] == [6], history  # taken over once, by the new leader
        for key in [*on_b[1:], *on_c[1:]]:
            assert disconnections[key.number] == [3], history
        taker = b if new_leader == "node-b" else c
        assert "Node node-a (epoch 1) expired" in taker.output(), taker.output()[-3000:]
        # The relay carried on: every row once, in each agent's order (the stream dedups by Nats-Msg-Id).
        rows = sum(len(agent_rows) for agent_rows in history.values())
        events = per_agent(asyncio.run(read_stream(nats.url, at_least=rows, timeout=30)))
        assert {agent: as_history(agent_events) for agent, agent_events in events.items()} == history
    finally:
        for node in nodes:
            if node.process is not None:
                node.stop()
        nats.stop()
