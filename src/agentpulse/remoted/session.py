"""One TCP connection: bytes in, frames to remoted, replies out. No task per connection.

The session only frames and guards; what a message means is decided by `Remoted.handle()`. Any WireError
closes this connection alone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from agentpulse.wire.errors import WireError
from agentpulse.wire.frames import LENGTH, FrameDecoder

if TYPE_CHECKING:
    from agentpulse.remoted.keystore import AgentEntry
    from agentpulse.remoted.server import Remoted

SEND_BUFFER_SIZE = 131072  # remoted.send_buffer_size: replies beyond this for one socket are dropped


def normalize_ip(host: str) -> str:
    """An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d; client.keys names it a.b.c.d."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


class Session(asyncio.Protocol):
    __slots__ = (
        "closed",
        "decoder",
        "entry",
        "last_received",
        "peer_ip",
        "probed_at",
        "remoted",
        "replaced",
        "transport",
    )

    def __init__(self, remoted: Remoted) -> None:
        self.remoted = remoted
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.entry: AgentEntry | None = None
        self.last_received = 0.0  # monotonic
        self.closed = False
        self.replaced = False  # closed by an overtake, a key removal or a timeout: no connection-lost status
        self.probed_at = -1.0  # monotonic time of the last manager keep-alive probe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = normalize_ip(peer[0]) if peer else ""
        self.last_received = self.remoted.monotonic()
        self.remoted.session_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_received = self.remoted.monotonic()
        try:
            for frame in self.decoder.feed(data):
                self.remoted.handle(frame, self.peer_ip, self)
                if self.closed:
                    return
        except WireError as error:
            self.remoted.refused(error, self.peer_ip, self.entry)
            self.close()

    def send(self, payload: bytes) -> bool:
        transport = self.transport
        if self.closed or transport is None or transport.get_write_buffer_size() > SEND_BUFFER_SIZE:
            return False
        transport.write(LENGTH.pack(len(payload)) + payload)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.remoted.session_closed(self)


class UdpEndpoint(asyncio.DatagramProtocol):
    """UDP: one datagram is one payload; there is no session, replies go to the saved peer."""

    def __init__(self, remoted: Remoted) -> None:
        self.remoted = remoted
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host = normalize_ip(str(addr[0]))
        try:
            self.remoted.handle(data, host, None, (str(addr[0]), int(addr[1])))
        except WireError as error:
            self.remoted.refused(error, host, None)

    def send(self, payload: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(payload, addr)
