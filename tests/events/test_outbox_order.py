"""The outbox publisher's ordering rules, against a scripted JetStream: prefix acks, no stale KV, no re-sends,
one write in flight per agent (tests/events/test_outbox_order_nats.py: the same against a real server)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentpulse.events import publisher
from agentpulse.events.publisher import NatsLink, OutboxPublisher, Unavailable
from tests.events.outbox_tools import Outbox, entries


@dataclass
class ScriptedJetStream:
    """publish (the relay's `acks`) answers at once: an ack, an error for the msg ids / KV keys in `refuse`, or
    nothing for those in `silent`."""

    refuse: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    stream: list[str] = field(default_factory=list)  # msg ids, in publish order
    kv: list[tuple[str, int]] = field(default_factory=list)  # (key, sequence), in publish order

    async def stream_info(self, name: str) -> Any:
        config = type(
            "Config", (), {"subjects": ["agent.status.>"], "duplicate_window": 120.0, "num_replicas": 1}
        )()
        return type("Info", (), {"config": config})()

    async def key_value(self, bucket: str) -> None:
        return None

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not subject.startswith("$KV."):
            name = (headers or {})["Nats-Msg-Id"]
            self.stream.append(name)
        else:
            name = "kv:" + subject.rsplit(".", 1)[1]
            self.kv.append((name[3:], json.loads(payload)["sequence"]))
        if name in self.refuse:
            future.set_exception(publisher.NatsError(f"refused {name}"))
        elif name not in self.silent:
            future.set_result(None)
        return future


class Connected:
    is_connected = True


ROWS = entries((1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (3, 1))


def publisher_for(js: ScriptedJetStream, outbox: Outbox) -> OutboxPublisher:
    link = NatsLink(Connected())  # type: ignore[arg-type]
    link.js = js  # type: ignore[assignment]
    link.epoch = 1
    events = OutboxPublisher(
        link,
        outbox,  # type: ignore[arg-type]
        outbox,  # type: ignore[arg-type]
        prefix="agent",
        stream="AGENT_STATUS",
        kv_bucket="agent_status",
    )
    events.acks = js
    return events


def test_a_refused_event_stops_the_acks_at_the_row_before_it_and_the_retry_sends_only_what_is_missing() -> (
    None
):
    """Waves: each agent's first row (and the KV writes), then each agent's second... The refused 001:2 ends
    the batch after its wave: 001:3 is not published before 001:2 is stored (it was, before issue 16)."""
    js, outbox = ScriptedJetStream(refuse={"001:2"}), Outbox(ROWS)
    events = publisher_for(js, outbox)

    async def scenario() -> None:
        with pytest.raises(Unavailable, match="refused"):
            await events.drain()
        assert outbox.acked == [1, 2]
        js.refuse.clear()
        assert await events.drain() == 4

    asyncio.run(scenario())
    assert outbox.acked == [1, 2, 3, 4, 5, 6]
    assert js.stream == ["001:1", "002:1", "003:1", "001:2", "002:2", "001:2", "001:3"]
    assert js.kv == [("001", 3), ("002", 2), ("003", 1)]  # the newest per agent, written once


def test_a_refused_kv_update_holds_that_agents_rows_and_never_writes_an_older_status_over_a_newer() -> None:
    js, outbox = ScriptedJetStream(refuse={"kv:001"}), Outbox(ROWS)
    events = publisher_for(js, outbox)

    async def scenario() -> None:
        with pytest.raises(Unavailable, match="KV bucket"):
            await events.drain()
        assert outbox.acked == []  # row 1 is agent 1's: nothing after it may be acknowledged before it
        js.refuse.clear()
        await events.drain()

    asyncio.run(scenario())
    assert outbox.acked == [1, 2, 3, 4, 5, 6]
    assert js.stream == ["001:1", "002:1", "003:1", "001:2", "002:2", "001:3"]  # nothing published twice
    for agent in ("001", "002", "003"):
        written = [seq for key, seq in js.kv if key == agent]
        assert written == sorted(written), agent


def test_missing_acks_time_out_and_nothing_after_them_is_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publisher, "ACK_TIMEOUT", 0.1)
    js, outbox = ScriptedJetStream(silent={"002:2"}), Outbox(ROWS)
    events = publisher_for(js, outbox)

    async def scenario() -> None:
        with pytest.raises(Unavailable, match="no JetStream acknowledgement"):
            await events.drain()
        assert outbox.acked == [1, 2, 3]
        js.silent.clear()
        await events.drain()

    asyncio.run(scenario())
    assert outbox.acked == [1, 2, 3, 4, 5, 6]
    assert js.stream.count("002:2") == 2 and len(js.stream) == 7


def test_batches_follow_each_other_until_the_outbox_is_empty() -> None:
    rows = entries(*((agent, 1) for agent in range(1, 2501)))
    js, outbox = ScriptedJetStream(), Outbox(rows)
    events = publisher_for(js, outbox)
    assert asyncio.run(events.drain()) == 2500
    assert outbox.acked == list(range(1, 2501))
    assert events.published == 2500
