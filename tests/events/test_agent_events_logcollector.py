"""The Python agent tails a file (`<localfile><location>`): the lines written to it after it started reach
AGENT_EVENTS as logcollector events, exactly as written, after its "Agent started" event. ~10 s."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentpulse.agent.home import init_agent_home
from tests.e2e.harness import LOOPBACK, AgentProcess, ManagerProcess
from tests.events.agent_events import body, field_bytes, read_events
from tests.events.fleet import nats_settings
from tests.events.natsserver import NatsServer

LINES = [
    b"Dec  2 00:00:01 web-01 sshd[811]: Accepted publickey for root from 10.0.0.9 port 50122 ssh2",
    b"Dec  2 00:00:02 web-01 sudo: deploy : TTY=pts/0 ; PWD=/srv ; USER=root ; COMMAND=/bin/ls",
    "Dec  2 00:00:03 web-01 app[9]: caf\u00e9 \u20ac 100".encode(),
]


def test_agent_tails_a_file_and_its_lines_are_published(
    tmp_path: Path, nats_server: NatsServer, manager: ManagerProcess
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"Dec  1 23:59:59 web-01 old: written before the agent started, not sent\n")
    manager.settings = nats_settings(nats_server.url)
    (key,) = manager.add_agents(1)
    manager.start()
    home = init_agent_home(
        tmp_path / "agent", LOOPBACK, manager.port, key.line(), notify_time=1, localfiles=[str(log)]
    )
    agent = AgentProcess(home)
    agent.start()
    try:
        manager.wait_for(key.number, "active", 0)
        with log.open("ab") as file:
            for line in LINES:
                file.write(line + b"\n")
            file.write(b"a partial line with no end yet")
        messages = asyncio.run(read_events(nats_server.url, 1 + len(LINES), settle=1.5))
    finally:
        agent.terminate()
        manager.stop()
    events = [body(message) for message in messages]
    assert field_bytes(events[0], "text") == f"ossec: Agent started: '{key.name}->any'.".encode()
    assert [field_bytes(event, "text") for event in events[1:]] == LINES
    assert all(event["location"] == str(log) and event["kind"] == "logcollector" for event in events[1:])
    assert all(message.subject == f"agent.events.{key.id}.logcollector" for message in messages)
