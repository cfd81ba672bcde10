"""More agent events than the manager can handle: agents that send only keep-alives are still acked at
once, nothing is lost, nobody is disconnected.

The manager's remoted is slowed to 2 ms per message (the test-only AGENTPULSE_TEST_SLOWDOWN_MS: a sleep,
so the figures do not depend on this machine's speed): it handles ~500 messages a second, and 12 agents
offer 1,200 events a second for 4 s. Without the loop budget (remoted/congestion.py) an iteration reads
every socket's backlog at once and a keep-alive read in it waits seconds for its ack. With it, events take
~10 ms of an iteration and the rest wait in the kernel and the agents' buffers. ~30 s.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentpulse.ingest.publisher import read_states
from tests.e2e.harness import ManagerProcess
from tests.events.agent_events import numbered, per_agent_sequences, read_events
from tests.events.fleet import Agent, connect_all, nats_settings
from tests.events.natsserver import NatsServer

NOISY, QUIET = 12, 5
BURST, BURSTS = 10, 40  # events per agent every 0.1 s: 100 a second each, 4 s
SLOWDOWN_MS = 2
ACK_BOUND = 1.0  # seconds; without the budget the slowest ack took 3-5 s here


async def flood(agent: Agent) -> int:
    sent = 0
    for _ in range(BURSTS):
        for _ in range(BURST):
            agent.connection.send(numbered(sent, 300))
            sent += 1
        await asyncio.sleep(0.1)
    return sent


async def keepalives(agent: Agent, until: float) -> list[float]:
    latencies = []
    while time.monotonic() < until:
        start = time.monotonic()
        await asyncio.wait_for(agent.keepalive(), 30)
        latencies.append(time.monotonic() - start)
        await asyncio.sleep(0.2)
    return latencies


@pytest.mark.timeout(120)
def test_keepalives_are_acked_on_time_while_events_overload_the_manager(
    nats_server: NatsServer, manager: ManagerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTPULSE_TEST_SLOWDOWN_MS", str(SLOWDOWN_MS))
    manager.settings = nats_settings(nats_server.url, connection_grace=30)
    noisy_keys = manager.add_agents(NOISY, prefix="noisy")
    quiet_keys = manager.add_agents(QUIET, prefix="quiet")
    manager.start()

    async def run() -> tuple[list[int], list[list[float]]]:
        noisy = await connect_all(manager, noisy_keys)
        quiet = await connect_all(manager, quiet_keys)
        for agent in noisy + quiet:
            await agent.startup()
        until = time.monotonic() + BURSTS * 0.1 + 2
        results = await asyncio.gather(
            asyncio.gather(*(flood(a) for a in noisy)), asyncio.gather(*(keepalives(a, until) for a in quiet))
        )
        sent, latencies = results
        # Everything is delivered while the connections stay open (what is paused is still the agents').
        messages = await read_events(nats_server.url, sum(sent), timeout=60, settle=1.0)
        sequences = per_agent_sequences(messages)
        assert sorted(sequences) == sorted(f"{key.number:03d}" for key in noisy_keys)
        assert all(seq == list(range(BURST * BURSTS)) for seq in sequences.values()), "in order, once each"
        for agent in noisy + quiet:
            agent.close()
        return sent, latencies

    sent, latencies = asyncio.run(run())
    assert sum(sent) == NOISY * BURST * BURSTS
    every = sorted(latency for one in latencies for latency in one)
    assert len(every) >= QUIET * 10
    assert every[-1] < ACK_BOUND, (
        f"slowest keep-alive-only ack {every[-1]:.2f} s (p50 {every[len(every) // 2]:.3f})"
    )
    assert all(status == "active" for status, _ in manager.statuses().values()), manager.statuses()
    states = read_states(manager.home)
    assert sum(int(state.get("load_pauses", 0)) for state in states) > 0  # the budget did the work
