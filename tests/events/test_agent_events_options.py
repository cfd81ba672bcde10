"""`<drop_when_full>yes`: with the spool full, events are dropped, counted, logged and shown by
`agentpulse status` (and nobody is paused). `<max_eps_per_agent>`: a burst is read more slowly, never
dropped. ~20 s."""

from __future__ import annotations

import asyncio
import time

from tests.e2e.harness import ManagerProcess, run_cli
from tests.events.agent_events import body, numbered, per_agent_sequences, read_events
from tests.events.fleet import Agent, nats_settings
from tests.events.natsserver import NatsServer


def test_drop_when_full_counts_logs_and_shows_drops(nats_server: NatsServer, manager: ManagerProcess) -> None:
    extra = "<agent_events><spool_max_bytes>64K</spool_max_bytes><drop_when_full>yes</drop_when_full></agent_events>"
    manager.settings = nats_settings(nats_server.url, extra)
    (key,) = manager.add_agents(1)
    manager.start()
    nats_server.stop()

    async def scenario() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        for sequence in range(200):  # 200 x ~2.3 KB against a 64 KiB spool
            agent.connection.send(numbered(sequence, 2000))
        await asyncio.wait_for(agent.keepalive(), 5)  # read at once: never paused
        await asyncio.sleep(1.5)  # the state file is written every second
        agent.close()

    try:
        asyncio.run(scenario())
        status = run_cli("agentpulse", "status", home=manager.root)
    finally:
        manager.stop()
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if line.startswith("Agent events:"))
    received = int(line.split()[2])
    dropped = int(line.split(",")[2].split()[0])
    assert received + dropped == 200 and dropped > 100, line
    assert "DROPPED events" in status.stdout
    assert "Agent events dropped: the spool is full (drop_when_full is yes)" in manager.output()


def test_max_eps_per_agent_slows_reading_and_drops_nothing(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    extra = "<agent_events><max_eps_per_agent>50</max_eps_per_agent></agent_events>"
    manager.settings = nats_settings(nats_server.url, extra)
    noisy_key, quiet_key = manager.add_agents(2)
    manager.start()

    async def scenario() -> tuple[float, float]:
        noisy, quiet = await Agent.connect(manager, noisy_key), await Agent.connect(manager, quiet_key)
        await noisy.startup()
        await quiet.startup()
        started = time.time()
        for sequence in range(250):  # five seconds' worth at 50/s, sent at once
            noisy.connection.send(numbered(sequence, 300))
        quiet_started = time.monotonic()
        await asyncio.wait_for(quiet.keepalive(), 2)  # the other agents are not slowed
        quiet_took = time.monotonic() - quiet_started
        messages = await read_events(nats_server.url, 250, timeout=30)
        last = max(float(body(message)["received"]) for message in messages)
        noisy.close()
        quiet.close()
        assert per_agent_sequences(messages)[noisy_key.id] == list(range(250))
        return last - started, quiet_took

    try:
        spread, quiet_took = asyncio.run(scenario())
    finally:
        manager.stop()
    assert 3.0 <= spread <= 15.0, spread  # (250 - a 50-event burst) / 50 per second = 4 s
    assert quiet_took < 1.0
