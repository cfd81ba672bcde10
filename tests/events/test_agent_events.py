"""Agent events reach JetStream byte for byte, with the right subject, Nats-Msg-Id and analysisd line."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.e2e.harness import ManagerProcess
from tests.events.agent_events import SAMPLES, body, field_bytes, read_events, sent_bytes
from tests.events.fleet import Agent, nats_settings
from tests.events.natsserver import NatsServer


def test_every_kind_round_trips_byte_for_byte(
    tmp_path: Path, nats_server: NatsServer, manager: ManagerProcess
) -> None:
    analysisd = tmp_path / "analysisd.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(analysisd))
    sink.settimeout(10)
    manager.settings = nats_settings(
        nats_server.url, f"<agent_events><analysisd_socket>{analysisd}</analysisd_socket></agent_events>"
    )
    (key,) = manager.add_agents(1)
    manager.start()

    async def send() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        for payload, _ in SAMPLES:
            agent.connection.send(payload)
        await agent.keepalive()  # acked after every event before it was handled
        agent.close()

    try:
        asyncio.run(send())
        messages = asyncio.run(read_events(nats_server.url, len(SAMPLES)))
        lines = [sink.recv(70000) for _ in range(len(SAMPLES) - 1)]  # the malformed one has no line
    finally:
        sink.close()
        manager.stop()
    assert len(messages) == len(SAMPLES)
    msg_ids = set()
    for message, (payload, kind) in zip(messages, SAMPLES, strict=True):
        event = body(message)
        assert message.subject == f"agent.events.001.{kind}"
        assert sent_bytes(event) == payload
        assert event["agent_id"] == "001" and event["name"] == key.name and event["kind"] == kind
        assert event["node"] == "node01" and event["type"] == "event"
        msg_id = message.headers["Nats-Msg-Id"] if message.headers else None
        assert msg_id is not None and msg_id.startswith("001:")
        assert msg_id == "001:{}:{}".format(*event["counter"])
        msg_ids.add(msg_id)
        if event.get("format_error"):
            assert field_bytes(event, "wazuh_line") is None
            continue
        queue, _, rest = payload.partition(b":")
        expected = queue + b":[001] (" + key.name.encode() + b") any->" + rest
        assert field_bytes(event, "wazuh_line") == expected
    assert len(msg_ids) == len(SAMPLES)
    expected_lines = [field_bytes(body(m), "wazuh_line") for m in messages if not body(m).get("format_error")]
    assert lines == expected_lines


def test_source_with_colon_and_pipe_is_escaped_as_wazuh_does() -> None:
    from agentpulse.ingest.event import Source, wazuh_line

    line = wazuh_line(ord("1"), Source(7, "a:b|c", "10.0.0.0/24", "n"), b"/var/log/x:y", b"t:u")
    assert line == b"1:[007] (a|:b||c) 10.0.0.0/24->/var/log/x:y:t:u"
