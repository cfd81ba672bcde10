"""SIGKILL of the manager with a full agent-events spool (NATS away), then a restart with NATS back:
every spooled event is delivered, none twice (Nats-Msg-Id dedup covers what was published before the
kill but not yet marked), and each agent's events stay in order. ~25 s."""

from __future__ import annotations

import asyncio
import json
import time

from agentpulse.ingest.event import decode_record
from agentpulse.ingest.publisher import read_states
from agentpulse.ingest.spool import Spool
from tests.e2e.harness import ManagerProcess
from tests.events.agent_events import body, numbered, per_agent_sequences, read_events, sequence_of
from tests.events.fleet import connect_all, nats_settings
from tests.events.natsserver import NatsServer

AGENTS = 10
LIMIT = 128 << 10


def spooled_sequences(manager: ManagerProcess) -> dict[str, list[int]]:
    """What the killed manager left in its spool, from the acknowledged cursor on, per agent."""
    spool = Spool(manager.home.events_spool_dir / "0")
    spool.open()
    out: dict[str, list[int]] = {}
    while records := spool.read(1000):
        for _, record in records:
            event = json.loads(decode_record(record)[2])
            out.setdefault(event["agent_id"], []).append(sequence_of(event))
    spool.close()
    return out


def spool_full(manager: ManagerProcess) -> bool:
    """The remoted process's own view (its state file, written every second): spool nearly full, senders paused."""
    states = read_states(manager.home)
    return any(int(s.get("spooled_bytes", 0)) >= LIMIT * 0.8 and int(s.get("paused_now", 0)) for s in states)


def test_sigkill_with_a_full_spool_loses_nothing_and_repeats_nothing(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    extra = f"<agent_events><spool_max_bytes>{LIMIT}</spool_max_bytes></agent_events>"
    manager.settings = nats_settings(nats_server.url, extra)
    keys = manager.add_agents(AGENTS)
    manager.start()

    async def first_run() -> None:
        agents = await connect_all(manager, keys)
        await asyncio.gather(*(agent.startup() for agent in agents))
        sequence = 0
        deadline = time.monotonic() + 3  # NATS up: these are published (and some not yet marked)
        while time.monotonic() < deadline:
            for agent in agents:
                agent.connection.send(numbered(sequence, 1000))
            sequence += 1
            await asyncio.sleep(0.01)
        nats_server.stop()
        # NATS away: the spool fills and reading pauses. At least 3 s, and on a loaded machine (which
        # reads more slowly) until the manager's own state says the spool is full and senders are paused.
        at_least, deadline = time.monotonic() + 3, time.monotonic() + 20
        while time.monotonic() < at_least or (time.monotonic() < deadline and not spool_full(manager)):
            for agent in agents:
                agent.connection.send(numbered(sequence, 1000))
            sequence += 1
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        manager.kill()
        for agent in agents:
            agent.connection.abort()

    try:
        asyncio.run(first_run())
        left = spooled_sequences(manager)
        assert (
            sum(map(len, left.values())) * 1400 >= LIMIT * 0.6
        )  # the spool was (nearly) full (~1.4 KB each)
        nats_server.start()
        manager.start()
        messages = asyncio.run(read_events(nats_server.url, 1))
        deadline = time.monotonic() + 30
        expected = {agent: seqs[-1] + 1 for agent, seqs in left.items()}
        while True:
            by_agent = per_agent_sequences(messages)
            if all(len(by_agent.get(a, [])) >= n for a, n in expected.items()):
                break
            assert time.monotonic() < deadline, {a: len(by_agent.get(a, [])) for a in expected}
            messages = asyncio.run(read_events(nats_server.url, 1))
        for agent, count in expected.items():
            # Every event up to the last one spooled, each once, in the agent's order.
            assert by_agent[agent] == list(range(count)), agent
        assert len({m.headers["Nats-Msg-Id"] for m in messages if m.headers}) == len(messages)
        assert all(body(m)["type"] == "event" for m in messages)
    finally:
        manager.stop()
