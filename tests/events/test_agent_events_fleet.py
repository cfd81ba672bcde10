"""`agentpulse simulate --events-per-agent` against a manager with two remoted workers: every event the
fleet sent is in AGENT_EVENTS once, under the subject of its kind, published by the workers. ~20 s."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path

from tests.e2e.harness import LOOPBACK, ManagerProcess, agentpulse_bin
from tests.events.agent_events import body, read_events
from tests.events.fleet import nats_settings
from tests.events.natsserver import NatsServer

AGENTS = 60
RATE = 5.0


def test_simulated_fleet_events_all_published_once_by_the_workers(
    tmp_path: Path, nats_server: NatsServer, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_server.url, workers=2, connection_grace=30)
    manager.add_agents(AGENTS)
    manager.start()
    command = [
        agentpulse_bin("agentpulse"),
        "simulate",
        "--manager",
        f"{LOOPBACK}:{manager.port}",
        "--agents",
        str(AGENTS),
        "--keys",
        str(manager.home.client_keys),
        "--interval",
        "2",
        "--ramp",
        "1",
        "--duration",
        "6",
        "--events-per-agent",
        str(RATE),
        "--event-mix",
        "syslog,fim,inventory",
        "--progress",
        "never",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        summary = json.loads(done.stdout)
        assert done.returncode == 0, f"{summary}\n{done.stderr}"
        sent = summary["events_sent"]
        assert sent >= AGENTS * RATE * 3
        messages = asyncio.run(read_events(nats_server.url, sent, timeout=60, settle=2.0))
    finally:
        manager.stop()
    assert len(messages) == sent
    kinds = Counter(message.subject.rsplit(".", 1)[1] for message in messages)
    assert set(kinds) == {"logcollector", "syscheck", "dbsync"}
    sizes = [len(body(message)["text"]) for message in messages]
    assert min(sizes) >= 50 and max(sizes) <= 8192
    assert len({message.headers["Nats-Msg-Id"] for message in messages if message.headers}) == sent
    states = list((manager.home.events_spool_dir).glob("*.state"))
    assert sorted(path.name for path in states) == ["1.state", "2.state"]  # each worker published its own
    published = [json.loads(path.read_text())["published"] for path in states]
    assert sum(published) == sent and all(published)
