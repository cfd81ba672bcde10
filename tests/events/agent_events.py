"""Helpers for the agent events tests: sample events of every kind, and a reader of the AGENT_EVENTS stream."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from tests.events.fleet import nats_client

# One sample per kind, as 4.x agents send them (reference 3.3 step 8), plus edge cases.
SAMPLES: list[tuple[bytes, str]] = [
    (b"1:/var/log/syslog:Dec  2 00:00:01 web-01 sshd[811]: Accepted publickey for root", "logcollector"),
    (b"1:wazuh-agent:ossec: Agent started: 'web-01->any'.", "logcollector"),
    (b"2:10.0.0.7:<13>Dec  2 00:00:01 host app: hello", "syslog"),
    (b"3:netstat -tulpn:ossec: output: 'netstat': tcp 0.0.0.0:22", "hostinfo"),
    (b'5:syscollector:{"component":"syscollector_packages","type":"integrity_check_global"}', "dbsync"),
    (
        b'8:syscheck:{"type":"event","data":{"path":"/etc/passwd","mode":"realtime","type":"modified"}}',
        "syscheck",
    ),
    (b"9:rootcheck:Starting rootcheck scan.", "rootcheck"),
    (b'd:syscollector:{"type":"dbsync_osinfo","data":{"os_name":"Ubuntu"}}', "syscollector"),
    (b'p:sca:{"type":"summary","policy_id":"cis_ubuntu22-04","passed":91}', "sca"),
    (b'u:upgrade_module:{"status":"Done"}', "upgrade"),
    (b'f:EventChannel:{"Message":"An account was successfully logged on"}', "eventchannel"),
    (b"z:weird:an unknown queue character", "other"),
    (b"1:/var/log/app|odd:name.log:text with : and | and \x1b[31m escapes \xe2\x82\xac", "logcollector"),
    (b"1:/var/log/latin1.log:caf\xe9 not utf-8 \xff\xfe", "logcollector"),
    (b"no colon at all, a malformed event", "other"),
]


def body(message: Msg) -> dict[str, Any]:
    return dict(json.loads(message.data))


def field_bytes(event: dict[str, Any], name: str) -> bytes | None:
    """A text field back to the agent's bytes: the UTF-8 string, or the base64 twin."""
    if event.get(name) is not None:
        return str(event[name]).encode("utf-8")
    encoded = event.get(f"{name}_b64")
    return base64.b64decode(encoded) if encoded is not None else None


def sent_bytes(event: dict[str, Any]) -> bytes:
    """What the agent sent, rebuilt from the event: `<q>:<location>:<text>`."""
    text = field_bytes(event, "text") or b""
    if event.get("format_error"):
        return text
    return str(event["queue"]).encode() + b":" + (field_bytes(event, "location") or b"") + b":" + text


async def read_events(url: str, at_least: int, timeout: float = 30.0, settle: float = 1.0) -> list[Msg]:
    """Every message of AGENT_EVENTS in stream order, once there are `at_least`, and `settle` s more
    (so a duplicate that would come after them is seen too)."""
    nc = await nats_client(url)
    messages: list[Msg] = []
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout

        async def keep(message: Msg) -> None:
            messages.append(message)

        sub = None
        while sub is None:
            try:
                await js.stream_info("AGENT_EVENTS")
                sub = await js.subscribe("agent.events.>", cb=keep, ordered_consumer=True)
            except (nats.js.errors.NotFoundError, nats.errors.TimeoutError):  # not yet, or a leader election
                assert time.monotonic() < deadline, "no AGENT_EVENTS stream, or no consumer on it"
                await asyncio.sleep(0.2)
        while len(messages) < at_least:
            assert time.monotonic() < deadline, f"AGENT_EVENTS: {len(messages)} of {at_least} events read"
            await asyncio.sleep(0.1)
        await asyncio.sleep(settle)
        await sub.unsubscribe()
        return messages
    finally:
        await nc.close()


def sequence_of(event: dict[str, Any]) -> int:
    """The number a test put at the start of an event's text: `seq=<n> ...`."""
    text = str(event["text"])
    return int(text.split(" ", 1)[0].removeprefix("seq="))


def per_agent_sequences(messages: list[Msg]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for message in messages:
        event = body(message)
        out.setdefault(event["agent_id"], []).append(sequence_of(event))
    return out


def numbered(sequence: int, size: int = 200) -> bytes:
    """A syslog-like event of about `size` bytes carrying its sequence number."""
    head = f"1:/var/log/syslog:seq={sequence} Dec  2 00:00:01 web-01 app[42]: ".encode()
    return head + b"x" * max(0, size - len(head))
