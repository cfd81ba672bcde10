"""Status changes as Server-Sent Events (`GET /agents/stream`): one hub subscribed to the store.

The store tells the hub each transition on the loop; the hub only appends it. Every `FLUSH_INTERVAL` it
encodes what came once and hands the same bytes to every client, with the counts per status after them,
so a page shows exact numbers without asking again. The danger is a slow client: its queue is bounded,
and a client that falls behind is closed (its EventSource reconnects and starts from a snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, RowReason
from agentpulse.store.facade import Store
from agentpulse.store.subscriber import Subscriber

FLUSH_INTERVAL: Final = 0.25
HEARTBEAT: Final = 15.0  # seconds between comments that keep proxies and dead peers honest
CLIENT_QUEUE: Final = 256  # batches a client may lag behind before it is closed
MAX_CLIENTS: Final = 64
MAX_BATCH: Final = 5000  # changes per event; more in one flush go out as several events
# More changes than this in one flush (a manager restart, a network cut) go out as one `resync` event
# with the counts only: encoding them all would hold the loop, and no one reads 200,000 lines anyway.
MAX_CHANGES: Final = 20000


def change_kind(row: TransitionRow, present: bool) -> str:
    if row.reason is RowReason.REGISTERED:
        return "registered"
    if not present:
        return "removed"
    return "change"


def counts_document(counts: Mapping[ConnectionStatus, int]) -> dict[str, int]:
    doc = {status.value: counts[status] for status in ConnectionStatus}
    doc["total"] = sum(counts.values())
    return doc


def event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


_OVERFLOW: Final[dict[str, Any]] = {}


class StreamHub:
    def __init__(self, store: Store, name_of: Callable[[int], str | None]) -> None:
        self.store = store
        self.name_of = name_of
        self._pending: list[dict[str, Any]] = []
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._subscriber = Subscriber(on_transition=self._on_transition)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.store.subscribe(self._subscriber)
        self._task = asyncio.create_task(self._flusher(), name="api-stream")

    async def stop(self) -> None:
        self.store.unsubscribe(self._subscriber)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def _on_transition(self, row: TransitionRow) -> None:
        if not self._clients or len(self._pending) > MAX_CHANGES:
            if self._clients:
                self._pending.append(_OVERFLOW)  # counted, not described: this flush is a resync
            return
        present = row.agent_id in self.store.view
        self._pending.append(
            {
                "id": f"{row.agent_id:03d}",
                "name": self.name_of(row.agent_id),
                "from": row.from_status.value,
                "to": row.to_status.value,
                "code": int(row.code),
                "reason": row.reason.value if row.reason is not None else row.code.reason,
                "kind": change_kind(row, present),
                "at": row.at,
                "seq": row.seq,
            }
        )

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if not self._pending:
                continue
            pending, self._pending = self._pending, []
            counts = counts_document(self.store.view.status_counts())
            if len(pending) > MAX_CHANGES:
                chunks = [event("resync", {"changes": len(pending), "counts": counts})]
            else:
                chunks = [
                    event("status", {"changes": pending[i : i + MAX_BATCH], "counts": counts})
                    for i in range(0, len(pending), MAX_BATCH)
                ]
            for queue in list(self._clients):
                for chunk in chunks:
                    try:
                        queue.put_nowait(chunk)
                    except asyncio.QueueFull:
                        self._clients.discard(queue)  # too slow: closed, it will start again
                        break

    def snapshot(self, with_agents: bool) -> bytes:
        doc: dict[str, Any] = {"counts": counts_document(self.store.view.status_counts())}
        if with_agents:
            doc["agents"] = [[agent_id, view.status.value] for agent_id, view in self.store.agents.items()]
        return event("snapshot", doc)

    def full(self) -> bool:
        return len(self._clients) >= MAX_CLIENTS

    async def follow(self, snapshot: bytes | None) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        try:
            yield b"retry: 2000\n\n" + (snapshot or b"")
            while queue in self._clients:
                try:
                    chunk = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if chunk is None:
                    return
                yield chunk
        finally:
            self._clients.discard(queue)
