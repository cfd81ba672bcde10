"""A 3-server NATS cluster (R3 stream and bucket) loses the server the manager publishes through while 200
agents keep changing status: every transition reaches the stream exactly once, in each agent's order. The
same with three nodes on one PostgreSQL, the server of the leader (whose relay publishes the shared
outbox) killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import api as js_api

from agentpulse.cluster.localnats import LOOPBACK, LocalNatsCluster
from tests.e2e.harness import ManagerProcess
from tests.e2e.nodes_tools import leader, make_nodes
from tests.events.fleet import (
    Agent,
    as_history,
    connect_all,
    history_by_agent,
    nats_client,
    nats_settings,
    per_agent,
    read_stream,
)
from tests.pgserver import PostgresServer

AGENTS = 200
ROUNDS = 4  # each: every agent shuts down, starts again and sends a keep-alive (three transitions each)
KILL_IN_ROUND = 1


def publishing_server(cluster: LocalNatsCluster) -> int:
    """Which server holds the manager's connection (the client named "agentpulse"), from /connz."""
    for index, ports in enumerate(cluster.ports):
        url = f"http://{LOOPBACK}:{ports.monitor}/connz"
        with urllib.request.urlopen(url, timeout=2) as response:
            connections = json.load(response).get("connections") or []
        if any(connection.get("name") == "agentpulse" for connection in connections):
            return index
    raise AssertionError("the manager is connected to no server of the cluster")


async def read_all(url: str, at_least: int, timeout: float) -> list[Msg]:
    """The whole stream through an R1 in-memory consumer: a consumer's own raft group is not what is
    tested, and a replicated one is slow to elect its leader with a server down."""
    nc = await nats_client(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        count = 0
        while count < at_least:
            assert time.monotonic() < deadline, f"the stream holds {count} messages, expected {at_least}"
            with contextlib.suppress(nats.errors.TimeoutError):  # while its leader is being elected
                count = (await js.stream_info("AGENT_STATUS")).state.messages
            await asyncio.sleep(0.2)
        sub = None
        while sub is None:  # the consumer's creation waits on the meta leader, re-elected after a kill
            assert time.monotonic() < deadline, "no consumer could be created on the stream"
            with contextlib.suppress(nats.errors.TimeoutError):
                sub = await js.pull_subscribe(
                    "",
                    stream="AGENT_STATUS",
                    config=js_api.ConsumerConfig(
                        deliver_policy=js_api.DeliverPolicy.ALL,
                        ack_policy=js_api.AckPolicy.NONE,  # nothing to redeliver, no cap in flight
                        num_replicas=1,
                        mem_storage=True,
                    ),
                )
        messages: list[Msg] = []
        while len(messages) < count:
            assert time.monotonic() < deadline, f"read {len(messages)} of {count} messages"
            with contextlib.suppress(nats.errors.TimeoutError):
                messages.extend(await sub.fetch(min(1000, count - len(messages)), timeout=2))
        return messages
    finally:
        await nc.close()


async def stream_replicas(url: str, stream: str = "AGENT_STATUS") -> tuple[int, str | None]:
    nc = await nats_client(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.config.num_replicas or 1, info.cluster.leader if info.cluster else None
    finally:
        await nc.close()


async def kv_sequences(url: str, agents: list[str], final: int, timeout: float) -> dict[str, int | None]:
    """The `sequence` each agent's KV entry holds, once every one holds `final` or `timeout` passed (the
    last batch's KV writes may be acknowledged after the stream's last message; a replica may lag)."""
    nc = await nats_client(url)
    try:
        kv = await nc.jetstream().key_value("agent_status")
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, int | None] = {}
            for agent in agents:
                try:
                    entry = await kv.get(agent)
                    found[agent] = json.loads(entry.value or b"{}").get("sequence")
                except (nats.errors.Error, TimeoutError):
                    found[agent] = None
            if all(seq == final for seq in found.values()) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


def whole_history(manager: ManagerProcess, expected: int, timeout: float) -> dict[str, list[Any]]:
    """The history once it holds `expected` rows (acks never wait on the database: the last rows may be in
    a flush still), and exactly that many."""
    deadline = time.monotonic() + timeout
    while sum(map(len, (history := history_by_agent(manager)).values())) < expected:
        assert time.monotonic() < deadline, f"{sum(map(len, history.values()))} of {expected} transitions"
        time.sleep(0.1)
    assert sum(map(len, history.values())) == expected
    return history


async def cycle(manager: ManagerProcess, agents: list[Agent]) -> None:
    for agent in agents:
        agent.shutdown()
    await manager.reach_all("disconnected", AGENTS, timeout=20)
    await asyncio.gather(*(agent.startup() for agent in agents))
    await asyncio.gather(*(agent.keepalive() for agent in agents))


def test_killing_a_nats_server_loses_and_repeats_no_status_event(
    nats_cluster: LocalNatsCluster, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_cluster.url, "<replicas>3</replicas>")
    keys = manager.add_agents(AGENTS)
    manager.start()
    killed: list[int] = []

    async def scenario() -> None:
        agents = await connect_all(manager, keys)
        await asyncio.gather(*(agent.startup() for agent in agents))
        await asyncio.gather(*(agent.keepalive() for agent in agents))
        messages = await read_stream(nats_cluster.urls[0], at_least=2 * AGENTS, timeout=20)
        assert len(messages) == 2 * AGENTS  # pending, then active
        assert (await stream_replicas(nats_cluster.urls[0]))[0] == 3
        assert (await stream_replicas(nats_cluster.urls[0], "KV_agent_status"))[0] == 3  # the KV bucket
        for round_no in range(ROUNDS):
            if round_no == KILL_IN_ROUND:
                victim = publishing_server(nats_cluster)
                killed.append(victim)
                for agent in agents:  # the events of these transitions are in flight during the kill
                    agent.shutdown()
                nats_cluster.kill(victim)
                await manager.reach_all("disconnected", AGENTS, timeout=20)
                await asyncio.gather(*(agent.startup() for agent in agents))
                await asyncio.gather(*(agent.keepalive() for agent in agents))
            else:
                await cycle(manager, agents)
        for agent in agents:  # a last, clean disconnection: closing alone would start the grace
            agent.shutdown()
        await manager.reach_all("disconnected", AGENTS, timeout=20)
        for agent in agents:
            agent.close()

    started = time.monotonic()
    asyncio.run(scenario())
    expected = (2 + 3 * ROUNDS + 1) * AGENTS
    history = whole_history(manager, expected, timeout=10)  # the last flush
    survivor = next(url for index, url in enumerate(nats_cluster.urls) if index not in killed)
    messages = asyncio.run(read_all(survivor, expected, timeout=60))
    assert len(messages) == expected, "a status event was stored twice"  # dedup by Nats-Msg-Id
    stream = per_agent(messages)
    for agent, rows in history.items():
        assert as_history(stream[agent]) == rows, agent
        assert [event["sequence"] for event in stream[agent]] == list(range(1, 3 * ROUNDS + 4)), agent
    last = asyncio.run(kv_sequences(survivor, list(history), 3 * ROUNDS + 3, timeout=15))
    assert last == dict.fromkeys(history, 3 * ROUNDS + 3)  # each KV entry ends on the agent's last event
    output = manager.output()
    assert "NATS reconnected to" in output, output[-3000:]
    assert output.count("Status events flowing again") <= 1
    assert time.monotonic() - started < 90


NODE_AGENTS = 60  # per node


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (from /proc: its fds' inodes, matched in /proc/net/tcp)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def server_of(cluster: LocalNatsCluster, pid: int) -> int:
    """Which server of the cluster holds the status-events connection of the process `pid` (named
    "agentpulse"; its agent-events connection, "agentpulse-events", may be on another), from /connz."""
    ports = local_ports(pid)
    for index, server in enumerate(cluster.ports):
        url = f"http://{LOOPBACK}:{server.monitor}/connz"
        with urllib.request.urlopen(url, timeout=2) as response:
            connections = json.load(response).get("connections") or []
        if any(c.get("port") in ports and c.get("name") == "agentpulse" for c in connections):
            return index
    raise AssertionError(f"process {pid} is connected to no server of the cluster")


async def cycle_all(
    nodes: list[ManagerProcess], agents: list[Agent], kill: Callable[[], None] | None
) -> None:
    """Every agent of every node shuts down (the NATS server killed meanwhile, if asked), starts again and
    keeps alive: three transitions each, written by three nodes at once."""
    for agent in agents:
        agent.shutdown()
    if kill is not None:
        kill()
    await nodes[0].reach_all("disconnected", len(agents), timeout=30)
    await asyncio.gather(*(agent.startup() for agent in agents))
    await asyncio.gather(*(agent.keepalive() for agent in agents))


def test_killing_the_leaders_nats_server_under_three_nodes_loses_and_repeats_no_status_event(
    nats_cluster: LocalNatsCluster, postgres: PostgresServer, tmp_path: Path
) -> None:
    """Three nodes write the one outbox at once; the leader relays it. The NATS server the leader
    publishes through is killed while every agent's shutdown is on its way: the stream still holds every
    transition exactly once, in each agent's order, whichever node wrote it, and each KV entry ends on the
    agent's last one. (Issue 16: about one run in five had one agent's events out of order, a later one
    stored while an earlier one died with the server, until the relay kept one write in flight per agent.)"""
    dsn = postgres.create_database("e2e_nats_nodes")
    nodes, keys = make_nodes(
        tmp_path,
        dsn,
        ["a", "b", "c"],
        3 * NODE_AGENTS,
        lambda name: nats_settings(nats_cluster.url, "<replicas>3</replicas>", node_name=f"node-{name}"),
    )
    killed: list[int] = []
    relays: list[ManagerProcess] = []  # the leader whose server was killed

    def kill_the_leaders_server() -> None:
        holder = leader(dsn)
        node = next(node for node in nodes if node.settings.node_name == holder)
        assert node.process is not None
        relays.append(node)
        victim = server_of(nats_cluster, node.process.pid)
        killed.append(victim)
        nats_cluster.kill(victim)

    async def scenario() -> None:
        agents = []
        for index, node in enumerate(nodes):
            agents += await connect_all(node, keys[index * NODE_AGENTS : (index + 1) * NODE_AGENTS])
        await asyncio.gather(*(agent.startup() for agent in agents))
        await asyncio.gather(*(agent.keepalive() for agent in agents))
        await nodes[0].reach_all("active", len(agents), timeout=30)
        for round_no in range(ROUNDS):
            await cycle_all(nodes, agents, kill_the_leaders_server if round_no == KILL_IN_ROUND else None)
        for agent in agents:
            agent.shutdown()
        await nodes[0].reach_all("disconnected", len(agents), timeout=30)
        for agent in agents:
            agent.close()

    try:
        for node in nodes:
            node.start()
        asyncio.run(scenario())
        expected = (2 + 3 * ROUNDS + 1) * len(keys)
        history = whole_history(nodes[0], expected, timeout=15)
        survivor = next(url for index, url in enumerate(nats_cluster.urls) if index not in killed)
        messages = asyncio.run(read_all(survivor, expected, timeout=60))
        assert len(messages) == expected, "a status event was stored twice"
        stream = per_agent(messages)
        for agent, rows in history.items():
            assert as_history(stream[agent]) == rows, agent
            assert [event["sequence"] for event in stream[agent]] == list(range(1, 3 * ROUNDS + 4)), agent
        last = asyncio.run(kv_sequences(survivor, list(history), 3 * ROUNDS + 3, timeout=15))
        assert last == dict.fromkeys(history, 3 * ROUNDS + 3)
        assert "NATS reconnected to" in relays[0].output(), relays[0].output()[-3000:]
    finally:
        for node in nodes:
            assert node.stop() == 0
