"""Wire-level agents for the events tests, and what a NATS consumer of agentpulse events does."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api as js_api

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings

KEEPALIVE = control.build_keepalive(
    "Linux |events-host |6.1.0-18-amd64 |#1 SMP Debian 6.1.76-1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)]"
    " - Wazuh v4.14.7",
    merged_sum="4a8724b20dee0124ff9656783c490c4e",
    agent_ip="127.0.0.1",
)


def nats_settings(url: str, extra: str = "", **settings: Any) -> ManagerSettings:
    return ManagerSettings(nats=f"<nats><enabled>yes</enabled><url>{url}</url>{extra}</nats>", **settings)


class Agent:
    """One agent on one TCP connection: startup, keep-alive and shutdown, each waiting for the manager."""

    def __init__(self, connection: AgentConnection, key: AgentKey) -> None:
        self.connection = connection
        self.key = key
        self.keepalives = 0

    @classmethod
    async def connect(cls, manager: ManagerProcess, key: AgentKey) -> Agent:
        return cls(await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port), key)

    async def startup(self) -> None:
        self.connection.send(control.build_startup("v4.14.7"))
        assert await self.connection.receive() == control.Ack()

    async def keepalive(self) -> None:
        self.connection.send(KEEPALIVE)
        self.keepalives += 1
        assert await self.connection.receive() == control.Ack()

    def shutdown(self) -> None:
        self.connection.send(control.SHUTDOWN)

    def close(self) -> None:
        self.connection.close()


async def connect_all(manager: ManagerProcess, keys: list[AgentKey]) -> list[Agent]:
    return list(await asyncio.gather(*(Agent.connect(manager, key) for key in keys)))


async def nats_client(url: str) -> NATS:
    """A consumer's connection: reconnects for ever, quickly."""
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=1, connect_timeout=2)


@dataclass
class Collector:
    """Subscribes to the status and keep-alive subjects and keeps what arrives, per agent, in order."""

    url: str
    prefix: str = "agent"
    status: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    keepalive: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    arrival: dict[tuple[str, int], float] = field(default_factory=dict)
    nc: NATS | None = None

    async def __aenter__(self) -> Collector:
        self.nc = await nats_client(self.url)
        await self.nc.subscribe(f"{self.prefix}.status.*", cb=self._on_status)
        await self.nc.subscribe(f"{self.prefix}.keepalive.*", cb=self._on_keepalive)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def _on_status(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        assert msg.subject == f"{self.prefix}.status.{event['agent_id']}"
        self.status[event["agent_id"]].append(event)

    async def _on_keepalive(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        assert msg.subject == f"{self.prefix}.keepalive.{event['agent_id']}"
        self.keepalive[event["agent_id"]].append(event)
        self.arrival[(event["agent_id"], event["sequence"])] = time.perf_counter()

    def counts(self) -> tuple[int, int]:
        return sum(map(len, self.status.values())), sum(map(len, self.keepalive.values()))

    async def wait_for(self, statuses: int, keepalives: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.counts()
            if seen[0] >= statuses and seen[1] >= keepalives:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"expected {statuses} status and {keepalives} keep-alive events, got {self.counts()}"
        )


async def read_stream(
    url: str, stream: str = "AGENT_STATUS", *, at_least: int = 0, timeout: float = 20.0
) -> list[Msg]:
    """Every message of the stream, in stream order, once it holds at least `at_least` messages."""
    nc = await nats_client(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            try:
                count = (await js.stream_info(stream)).state.messages
            except nats.js.errors.NotFoundError:
                count = 0
            if count >= at_least:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {stream} holds {count} messages, expected {at_least}")
            await asyncio.sleep(0.1)
        sub = await js.pull_subscribe(
            "", stream=stream, config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL)
        )
        messages: list[Msg] = []
        while len(messages) < count:
            messages.extend(await sub.fetch(min(1000, count - len(messages)), timeout=5))
        return messages
    finally:
        await nc.close()


def per_agent(messages: list[Msg]) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for msg in messages:
        event = json.loads(msg.data)
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == f"{event['agent_id']}:{event['sequence']}"
        events[event["agent_id"]].append(event)
    return events


def history_by_agent(manager: ManagerProcess) -> dict[str, list[tuple[int, str, str, int]]]:
    """agent_status_history as (sequence, from, to, code) per agent, in sequence order."""
    rows = manager.query(
        "SELECT agent_id, seq, from_status, to_status, status_code FROM agent_status_history "
        "ORDER BY agent_id, seq"
    )
    history: dict[str, list[tuple[int, str, str, int]]] = defaultdict(list)
    for row in rows:
        history[f"{row[0]:03d}"].append((row[1], row[2], row[3], row[4]))
    return history


def as_history(events: list[dict[str, Any]]) -> list[tuple[int, str, str, int]]:
    return [(e["sequence"], e["previous"], e["status"], e["status_code"]) for e in events]
