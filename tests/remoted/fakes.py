"""Small stand-ins for what remoted talks to, so its rules can be tested without sockets: an asyncio
transport, the store's record sink and the grace tracker, each recording what it was given."""

from __future__ import annotations

import asyncio
from typing import Any

from agentpulse.records import StatusUpdate
from agentpulse.remoted.grace import LOCAL
from agentpulse.wire.frames import LENGTH


class FakeTransport(asyncio.Transport):
    """A TCP transport that keeps what is written. `close()` only marks it: the test calls the
    protocol's `connection_lost`, as the event loop would on its next turn."""

    def __init__(self, peer: tuple[str, int] = ("10.0.0.1", 40000), buffered: int = 0) -> None:
        super().__init__()
        self.peer = peer
        self.buffered = buffered
        self.written: list[bytes] = []
        self.closing = False
        self.reading = True
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def frames(self) -> list[bytes]:
        """What was written, one payload per frame (each write is one length-prefixed frame)."""
        return [data[LENGTH.size :] for data in self.written]


class FakeDatagramTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))


class RecordingStore:
    """The store's RecordSink: keeps every update, state and count."""

    def __init__(self) -> None:
        self.updates: list[StatusUpdate] = []
        self.states: list[tuple[int, str]] = []
        self.counts: list[dict[int, int]] = []

    def submit(self, update: StatusUpdate) -> None:
        self.updates.append(update)

    def record_state(self, agent_id: int, state_json: str) -> None:
        self.states.append((agent_id, state_json))

    def count_events(self, counts: dict[int, int]) -> None:
        self.counts.append(counts)


class RecordingGrace:
    """The grace tracker as the bindings see it: keeps (event, agent) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def bound(self, agent_id: int, holder: int = LOCAL) -> None:
        self.events.append(("bound", agent_id))

    def closed(self, agent_id: int, holder: int = LOCAL) -> None:
        self.events.append(("closed", agent_id))

    def released(self, agent_id: int, holder: int = LOCAL) -> None:
        self.events.append(("released", agent_id))
