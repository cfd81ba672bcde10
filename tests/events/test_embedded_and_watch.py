"""No <url>: the manager runs its own nats-server; `agentpulse watch --home` finds it and prints events."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from urllib.parse import urlsplit

from agentpulse.cli.watch import format_event
from tests.e2e.harness import ManagerProcess, ManagerSettings
from tests.events.fleet import Agent, read_stream

EMBEDDED = ManagerSettings(nats="<nats><enabled>yes</enabled></nats>")


def accepts(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=0.5):
            return True
    except OSError:
        return False


def test_embedded_server_serves_events_and_watch_prints_them(manager: ManagerProcess) -> None:
    manager.settings = EMBEDDED
    (key,) = manager.add_agents(1)
    manager.start()
    url = manager.home.nats_url_file.read_text().strip()
    assert url.startswith("nats://127.0.0.1:")
    assert f"Embedded nats-server started: {url}" in manager.output()

    async def scenario() -> list[dict[str, object]]:
        agent = await Agent.connect(manager, key)
        await agent.startup()  # a first status event, so the snapshot has something to show
        await manager.reach(key.number, "pending")
        await read_stream(url, at_least=1)
        watch = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentpulse",
            "watch",
            "--home",
            str(manager.root),
            "--json",
            "--snapshot",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert watch.stdout is not None and watch.stderr is not None
            banner = await asyncio.wait_for(watch.stderr.readline(), 10)
            assert b"following status, keepalive events" in banner
            lines = [json.loads(await asyncio.wait_for(watch.stdout.readline(), 10))]  # the snapshot
            await agent.keepalive()
            lines += [json.loads(await asyncio.wait_for(watch.stdout.readline(), 10)) for _ in range(2)]
            agent.close()
            return lines
        finally:
            watch.terminate()
            await watch.wait()

    snapshot, *live = asyncio.run(scenario())
    assert (snapshot["type"], snapshot["status"], snapshot["sequence"]) == ("status", "pending", 1)
    assert sorted((event["type"], event["status"]) for event in live) == [
        ("keepalive", "active"),
        ("status", "active"),
    ]

    assert manager.stop() == 0
    assert not manager.home.nats_url_file.exists()
    assert not accepts(url)


def test_embedded_server_dies_with_a_killed_manager(manager: ManagerProcess) -> None:
    manager.settings = EMBEDDED
    manager.start()
    url = manager.home.nats_url_file.read_text().strip()
    assert accepts(url)
    manager.kill()
    deadline = time.monotonic() + 10
    while accepts(url):
        assert time.monotonic() < deadline, "the embedded nats-server outlived its manager"
        time.sleep(0.1)
    manager.start()  # the store directory is free again: the next run starts its own server
    assert accepts(manager.home.nats_url_file.read_text().strip())


def test_ctrl_c_stops_the_embedded_server_after_the_manager_not_before(manager: ManagerProcess) -> None:
    manager.settings = EMBEDDED
    manager.start(own_group=True)
    url = manager.home.nats_url_file.read_text().strip()
    assert accepts(url)
    assert manager.interrupt_group() == 0
    output = manager.output()
    # The server is not in the terminal's group: only the manager stops it (SIGTERM), after its last events.
    server_log = (manager.home.logs_dir / "nats-server.log").read_text()
    assert 'Trapped "terminated" signal' in server_log and 'Trapped "interrupt" signal' not in server_log
    assert "NATS connection lost" not in output
    assert output.index("Stopped: every accepted status change is committed") < output.index(
        "Embedded nats-server stopped"
    )
    assert not accepts(url)


def test_watch_one_liners_read_like_the_statuses() -> None:
    status = {
        "type": "status",
        "agent_id": "007",
        "name": "web-01",
        "previous": "active",
        "status": "disconnected",
        "status_code": 3,
        "reason": "shutdown message received",
        "at_iso": "2023-11-14T22:13:20.250Z",
        "sequence": 3,
    }
    keepalive = {
        "type": "keepalive",
        "agent_id": "007",
        "name": "web-01",
        "ip": "10.0.0.7",
        "version": "Wazuh v4.14.7",
        "status": "active",
        "last_keepalive": 1_700_000_000.5,
        "sequence": 12,
    }
    assert format_event(status) == (
        "2023-11-14T22:13:20.250Z  007 web-01  status    active -> disconnected (3: shutdown message received)  seq 3"
    )
    assert format_event(keepalive) == (
        "2023-11-14T22:13:20.500Z  007 web-01  keepalive  active  10.0.0.7  Wazuh v4.14.7  seq 12"
    )
