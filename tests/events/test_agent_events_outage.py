"""NATS away for 10 s while 100 agents send 10 events/s each: the spool holds them, then every one arrives once, in order.

And when the spool is full: reading pauses for the senders only, keep-alives are still acked, nobody is
disconnected, and everything arrives after NATS returns. ~25 s and ~30 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nats.aio.msg import Msg

from tests.e2e.harness import ManagerProcess
from tests.events.agent_events import numbered, per_agent_sequences, read_events
from tests.events.fleet import KEEPALIVE, Agent, connect_all, nats_settings
from tests.events.natsserver import NatsServer

AGENTS = 100
RATE = (
    10  # events per second per agent (20 saturates this shared machine: test and manager seal and open each)
)
OUTAGE = 10.0
ACK_LIMIT = 5.0  # a keep-alive read must be acked within this, NATS away or not


async def keepalives_acked(agents: list[Agent], until: float, worst: list[float]) -> None:
    """Every agent sends a keep-alive each second until `until`; each must be acked within ACK_LIMIT."""
    while time.monotonic() < until:
        started = time.monotonic()
        await asyncio.gather(*(asyncio.wait_for(agent.keepalive(), ACK_LIMIT) for agent in agents))
        worst.append(time.monotonic() - started)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


async def send_events(agents: list[Agent], rate: float, until: float, size: int = 200) -> list[int]:
    """Each agent sends `rate` numbered events a second until `until`; returns how many each sent."""
    sent = [0] * len(agents)
    step = 1.0 / rate
    next_at = time.monotonic()
    while next_at < until:
        for index, agent in enumerate(agents):
            agent.connection.send(numbered(sent[index], size))
            sent[index] += 1
        next_at += step
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return sent


async def keep_sending_keepalives(agents: list[Agent]) -> None:
    """A keep-alive from every agent each second, acks not awaited (they queue up unread)."""
    while True:
        for agent in agents:
            agent.connection.send(KEEPALIVE)
        await asyncio.sleep(1.0)


def test_nats_outage_every_event_once_in_order_keepalives_acked(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_server.url)
    keys = manager.add_agents(AGENTS)
    manager.start()
    nats_server.stop()

    async def scenario() -> tuple[list[int], list[float], dict[int, tuple[str, int]]]:
        agents = await connect_all(manager, keys)
        await asyncio.gather(*(agent.startup() for agent in agents))
        until = time.monotonic() + OUTAGE
        worst: list[float] = []
        sent, _ = await asyncio.gather(
            send_events(agents, RATE, until), keepalives_acked(agents, until, worst)
        )
        statuses = manager.statuses()
        nats_server.start()
        for agent in agents:
            agent.close()
        return sent, worst, statuses

    try:
        sent, worst, statuses = asyncio.run(scenario())
        print("worst keep-alive round per second:", [round(w, 2) for w in worst])
        total = sum(sent)
        messages = asyncio.run(read_events(nats_server.url, total, timeout=60))
        assert len(messages) == total  # none twice
        by_agent = per_agent_sequences(messages)
        assert len(by_agent) == AGENTS
        for index, key in enumerate(keys):
            assert by_agent[key.id] == list(range(sent[index])), key.id  # every one, in the agent's order
        assert max(worst) < ACK_LIMIT
        assert all(status == ("active", 0) for status in statuses.values())
    finally:
        manager.stop()


SPOOL_AGENTS = 20  # sending events
QUIET_AGENTS = 10  # keep-alives only
SPOOL_LIMIT = 256 << 10


def test_full_spool_pauses_senders_only_and_everything_arrives_after(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    extra = f"<agent_events><spool_max_bytes>{SPOOL_LIMIT}</spool_max_bytes></agent_events>"
    manager.settings = nats_settings(
        nats_server.url, extra, keepalive_enabled=True, keepalive_interval=2, keepalive_timeout=4
    )
    keys = manager.add_agents(SPOOL_AGENTS + QUIET_AGENTS)
    manager.start()
    nats_server.stop()

    async def scenario() -> tuple[list[int], list[float], dict[int, tuple[str, int]], list[Msg]]:
        agents = await connect_all(manager, keys)
        await asyncio.gather(*(agent.startup() for agent in agents))
        senders, quiet = agents[:SPOOL_AGENTS], agents[SPOOL_AGENTS:]
        until = time.monotonic() + 6
        worst: list[float] = []
        # 20 agents x 50 events/s x 2 KB: the 256 KiB spool is full within a second.
        sent, _ = await asyncio.gather(
            send_events(senders, 50, until, size=2000), keepalives_acked(quiet, until + 8, worst)
        )
        statuses = manager.statuses()  # 8 s into the pause, past the manager keep-alive's timeout
        nats_server.start()
        # The agents stay connected (what they sent while paused is still in their sockets) and alive.
        alive = asyncio.create_task(keep_sending_keepalives(agents))
        messages = await read_events(nats_server.url, sum(sent), timeout=90)
        alive.cancel()
        histories.update({key.id: [row[1] for row in manager.history(key.number)] for key in keys})
        for agent in agents:
            agent.close()
        return sent, worst, statuses, messages

    histories: dict[str, list[str]] = {}

    try:
        sent, worst, statuses, messages = asyncio.run(scenario())
        assert _spool_pauses_seen(manager.home.root) >= 1  # reading did pause
        assert all(status == ("active", 0) for status in statuses.values()), statuses
        assert max(worst) < ACK_LIMIT
        total = sum(sent)
        assert len(messages) == total
        by_agent = per_agent_sequences(messages)
        for index, key in enumerate(keys[:SPOOL_AGENTS]):
            assert by_agent[key.id] == list(range(sent[index])), key.id
        for key in keys:  # the pause changed nobody's status: startup, first keep-alive, nothing else
            assert histories[key.id] == ["pending", "active"], key.id
    finally:
        manager.stop()


def _spool_pauses_seen(home: Path) -> int:
    import json

    return sum(
        json.loads(p.read_text()).get("pauses", 0) for p in (home / "queue" / "events").glob("*.state")
    )
