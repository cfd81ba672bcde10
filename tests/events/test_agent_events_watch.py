"""`agentpulse watch --events [--agent ID] [--kind K]`, against the embedded nats-server (so remoted also
finds the embedded server's URL by itself): one line per matching event, agent text escaped; `--json`
prints the payload as published. ~10 s."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.e2e.harness import ManagerProcess, ManagerSettings
from tests.events.fleet import Agent

EMBEDDED = ManagerSettings(nats="<nats><enabled>yes</enabled></nats>")


async def start_watch(manager: ManagerProcess, *options: str) -> asyncio.subprocess.Process:
    watch = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentpulse",
        "watch",
        "--home",
        str(manager.root),
        "--events",
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert watch.stderr is not None
    banner = await asyncio.wait_for(watch.stderr.readline(), 15)
    assert b"following agent events" in banner, banner
    return watch


def test_watch_events_filters_by_agent_and_kind(manager: ManagerProcess) -> None:
    manager.settings = EMBEDDED
    keys = manager.add_agents(2)
    manager.start()

    async def scenario() -> tuple[list[str], list[dict[str, object]]]:
        agents = [await Agent.connect(manager, key) for key in keys]
        for agent in agents:
            await agent.startup()
        human = await start_watch(manager, "--agent", "1", "--kind", "syscheck")
        raw = await start_watch(manager, "--json")
        try:
            await asyncio.sleep(2.0)  # remoted's own NATS connection is up by now
            for agent in agents:
                agent.connection.send(b"1:/var/log/syslog:a log line")
                agent.connection.send(b'8:syscheck:{"path":"/etc/passwd","evil":"\x1b[2J"}')
                await agent.keepalive()
            assert human.stdout is not None and raw.stdout is not None
            line = (await asyncio.wait_for(human.stdout.readline(), 15)).decode()
            documents = [json.loads(await asyncio.wait_for(raw.stdout.readline(), 15)) for _ in range(4)]
            return [line], documents
        finally:
            for process in (human, raw):
                process.terminate()
                await process.wait()
            for agent in agents:
                agent.close()

    try:
        lines, documents = asyncio.run(scenario())
    finally:
        manager.stop()
    assert " 001 " in lines[0] and "syscheck  syscheck: " in lines[0]
    assert "\x1b" not in lines[0] and "\\x1b[2J" in lines[0]
    assert sorted((d["agent_id"], d["kind"]) for d in documents) == [
        ("001", "logcollector"),
        ("001", "syscheck"),
        ("002", "logcollector"),
        ("002", "syscheck"),
    ]
