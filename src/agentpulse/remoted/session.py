"""One TCP connection: bytes in, frames to the dispatcher, replies out, and why it closed. No task per connection.

The session only frames, guards and writes; what a message means is decided by `Remoted.handle()`, and
which agent the connection carries is kept by `Bindings`, not here. Any WireError closes this connection
alone. Every close has a `CloseReason`: it alone decides whether the agent lost its connection (grace).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Protocol, cast

from agentpulse.wire.errors import WireError
from agentpulse.wire.frames import LENGTH, FrameDecoder

SEND_BUFFER_SIZE = 131072  # remoted.send_buffer_size: replies beyond this for one socket are dropped
UdpPeer = tuple[str, int]  # (host, port) as the datagram came from


class CloseReason(enum.Enum):
    """Why a connection closed. Only a loss the agent did not ask for starts its connection grace."""

    PEER_CLOSED = "peer closed"  # the agent (or the network) closed it: after a shutdown, a crash, a drop
    REFUSED = "refused"  # it sent something we refused (WireError)
    OVERTAKEN = "overtaken"  # a new connection of the same agent took its key (connection_overtake_time)
    KEY_REMOVED = "key removed"  # its client.keys line was removed or changed
    TIMEOUT = "timeout"  # silent for the manager keep-alive timeout: the timeout is the status change
    MANAGER_STOPPING = "manager stopping"  # the next start resets every live agent (code 5)

    @property
    def loses_connection(self) -> bool:
        """True: the agent lost its connection (grace, then code 6). False: it was let go on purpose,
        and whoever let it go reported the status change, if any."""
        return self in _CONNECTION_LOST


_CONNECTION_LOST = frozenset({CloseReason.PEER_CLOSED, CloseReason.REFUSED})


def normalize_ip(host: str) -> str:
    """An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d; client.keys names it a.b.c.d."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


class Dispatcher(Protocol):
    """What sessions and the UDP endpoint call: `Remoted`, which decides what a message means."""

    monotonic: Callable[[], float]

    def handle(
        self, data: bytes, peer_ip: str, session: Session | None, udp_peer: UdpPeer | None = None
    ) -> None: ...

    def refused(self, error: WireError, peer_ip: str, session: Session | None) -> None: ...

    def session_opened(self, session: Session) -> None: ...

    def session_closed(self, session: Session) -> None: ...


class Session(asyncio.Protocol):
    __slots__ = (
        "close_reason",
        "decoder",
        "dispatcher",
        "held",
        "last_received",
        "peer_ip",
        "probed_at",
        "transport",
    )

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.last_received = 0.0  # monotonic
        self.close_reason: CloseReason | None = None  # None while open
        self.probed_at = -1.0  # monotonic time of the last manager keep-alive probe
        # While the dispatcher waits for an answer about this connection (see `hold()`), frames wait here.
        self.held: list[bytes] | None = None

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = normalize_ip(peer[0]) if peer else ""
        self.last_received = self.dispatcher.monotonic()
        self.dispatcher.session_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.close_reason is not None:
            return
        self.last_received = self.dispatcher.monotonic()
        try:
            frames = self.decoder.feed(data)
        except WireError as error:
            self.dispatcher.refused(error, self.peer_ip, self)
            self.close(CloseReason.REFUSED)
            return
        if self.held is not None:
            self.held.extend(frames)
            return
        self._dispatch(frames)

    def _dispatch(self, frames: list[bytes]) -> None:
        try:
            for index, frame in enumerate(frames):
                self.dispatcher.handle(frame, self.peer_ip, self)
                if self.close_reason is not None:
                    return
                if self.held is not None:  # the dispatcher waits for an answer: the rest waits too
                    self.held.extend(frames[index + 1 :])
                    return
        except WireError as error:
            self.dispatcher.refused(error, self.peer_ip, self)
            self.close(CloseReason.REFUSED)

    def hold(self) -> None:
        """Stop reading and dispatching until `resume()`: the frame just handled waits for an answer."""
        if self.held is None:
            self.held = []
            if self.transport is not None:
                self.transport.pause_reading()

    def resume(self) -> None:
        """The answer came: dispatch what arrived meanwhile, in order, and read again."""
        frames, self.held = self.held, None
        if frames is None or self.close_reason is not None:
            return
        if self.transport is not None:
            self.transport.resume_reading()
        self._dispatch(frames)

    def send(self, payload: bytes) -> bool:
        transport = self.transport
        if self.close_reason is not None or transport is None:
            return False
        if transport.get_write_buffer_size() > SEND_BUFFER_SIZE:
            return False
        transport.write(LENGTH.pack(len(payload)) + payload)
        return True

    def close(self, reason: CloseReason) -> None:
        """Close the connection; the first reason given is the one that counts."""
        if self.close_reason is None:
            self.close_reason = reason
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_reason is None:
            self.close_reason = CloseReason.PEER_CLOSED
        self.dispatcher.session_closed(self)


class UdpEndpoint(asyncio.DatagramProtocol):
    """UDP: one datagram is one payload; there is no session, replies go to the saved peer."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host = normalize_ip(str(addr[0]))
        try:
            self.dispatcher.handle(data, host, None, (str(addr[0]), int(addr[1])))
        except WireError as error:
            self.dispatcher.refused(error, host, None)

    def send(self, payload: bytes, addr: UdpPeer) -> None:
        if self.transport is not None:
            self.transport.sendto(payload, addr)
