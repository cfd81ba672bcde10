"""The event stream hub over a real store: changes batched with the counts, a removal told as such,
and a flood of changes sent as one resync with the counts only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.api import stream
from agentpulse.api.stream import StreamHub
from agentpulse.records import StatusUpdate
from agentpulse.status import Trigger
from agentpulse.store.facade import Store
from agentpulse.wire.keys import KeysFile

AGENTS = 30


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    keys = KeysFile.parse("".join(f"{n:03d} agent-{n:02d} any key{n}\n" for n in range(1, AGENTS + 1)))
    opened = Store(tmp_path / "db", manager_host="mgr", node_name="node01", flush_interval=0.05)
    opened.open(list(keys.active()))
    yield opened
    opened.close()


def events(chunks: list[bytes]) -> list[tuple[str, dict[str, object]]]:
    out = []
    for chunk in chunks:
        for block in chunk.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in lines:
                out.append((lines["event"], json.loads(lines["data"])))
    return out


async def collect(hub: StreamHub, count: int, act: object) -> list[bytes]:
    follower = hub.follow(hub.snapshot(with_agents=False))
    chunks = [await follower.__anext__()]
    assert callable(act)
    act()
    for _ in range(count):
        chunks.append(await asyncio.wait_for(follower.__anext__(), 5))
    await follower.aclose()
    return chunks


def test_changes_come_batched_with_the_counts_and_a_removal_says_so(store: Store) -> None:
    async def scenario() -> list[bytes]:
        hub = StreamHub(store, store.name_of)
        hub.start()

        def act() -> None:
            store.submit(StatusUpdate(1, Trigger.STARTUP, time.time()))
            store.remove_agents([2], time.time())

        try:
            return await collect(hub, 1, act)
        finally:
            await hub.stop()

    seen = events(asyncio.run(scenario()))
    assert seen[0][0] == "snapshot" and seen[0][1]["counts"]["never_connected"] == AGENTS  # type: ignore[index]
    name, document = seen[1]
    assert name == "status"
    changes = document["changes"]
    assert isinstance(changes, list)
    assert [(c["id"], c["kind"]) for c in changes] == [("001", "change"), ("002", "removed")]
    assert changes[0]["name"] == "agent-01" and changes[0]["from"] == "never_connected"
    assert document["counts"] == {
        "never_connected": AGENTS - 2,
        "pending": 1,
        "active": 0,
        "disconnected": 0,
        "total": AGENTS - 1,
    }


def test_a_flood_of_changes_is_one_resync_event(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "MAX_CHANGES", 10)

    async def scenario() -> list[bytes]:
        hub = StreamHub(store, store.name_of)
        hub.start()

        def act() -> None:
            now = time.time()
            for agent_id in range(1, AGENTS + 1):
                store.submit(StatusUpdate(agent_id, Trigger.STARTUP, now))

        try:
            return await collect(hub, 1, act)
        finally:
            await hub.stop()

    name, document = events(asyncio.run(scenario()))[1]
    assert name == "resync" and document["changes"] == AGENTS
    assert document["counts"]["pending"] == AGENTS  # type: ignore[index]
