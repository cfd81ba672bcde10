"""One simulated agent's connection to the manager: `TcpConnection` (framed stream) or `UdpConnection`.

Each is the asyncio protocol of its socket and hands what arrives to its owner (the fleet of the process,
`ConnectionOwner`); a connection the agent has moved on from is ignored, whatever it still reports.
TCP sockets are bound to the agent's source address with IP_BIND_ADDRESS_NO_PORT, so the kernel picks
the port at connect time and can reuse TIME_WAIT ports from an earlier run.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Final, Protocol, cast

from agentpulse.simulator.agents import SILENT, SimAgent
from agentpulse.wire.errors import WireError
from agentpulse.wire.frames import FrameDecoder

IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux >= 4.2
WRITE_BUFFER_LIMIT: Final = 64 * 1024  # per socket: beyond it the manager is not reading; skip a send


class ConnectionOwner(Protocol):
    """What a connection reports to: the fleet of its process."""

    def first_frame(self, connection: SimConnection) -> bytes:
        """What to write the moment the connect completes (the startup, as agentd does), or b''."""
        ...

    def on_message(self, connection: SimConnection, data: bytes) -> None: ...

    def on_connection_lost(self, connection: SimConnection) -> None: ...

    def bad_stream(self, connection: SimConnection) -> None: ...

    def error(self, kind: str) -> None: ...


class SimConnection:
    """One connection of one agent. Callbacks from a connection the agent has moved on from are ignored."""

    __slots__ = ("agent", "closing", "connected_at", "lost", "owner", "transport")

    def __init__(self, owner: ConnectionOwner, agent: SimAgent) -> None:
        self.owner = owner
        self.agent = agent
        self.connected_at = 0.0  # monotonic, when this loop saw the connect complete (TCP)
        self.transport: asyncio.BaseTransport | None = None
        self.closing = False  # closed by us: its connection_lost is not news
        self.lost = False

    @property
    def up(self) -> bool:
        return self.transport is not None and not self.lost

    async def open(self, address: tuple[str, int]) -> None:
        """Connect from the agent's source address; OSError when that fails."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.owner.on_connection_lost(self)

    def write(self, data: bytes) -> bool:
        raise NotImplementedError

    def writable(self) -> bool:
        """False when a write would be refused (closing, or the manager is not reading): the caller can
        skip building the message."""
        return self.transport is not None and not self.transport.is_closing()

    def local_ip(self) -> str:
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        return str(sockname[0]) if isinstance(sockname, tuple) and sockname else self.agent.source

    def pause(self) -> None:
        """Stop reading, like a stopped process: the kernel buffers, then the manager's writes back up."""

    def unsent(self) -> int:
        """Bytes written and still buffered by us, not yet handed to the kernel (0 for a datagram or when
        gone): past WRITE_BUFFER_LIMIT a write is refused."""
        return 0

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class TcpConnection(SimConnection, asyncio.Protocol):
    __slots__ = ("decoder", "unsent_first")

    def __init__(self, owner: ConnectionOwner, agent: SimAgent) -> None:
        super().__init__(owner, agent)
        self.decoder = FrameDecoder()
        self.unsent_first = b""

    async def open(self, address: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.agent.source, 0))
            await loop.sock_connect(sock, address)
            self.connected_at = time.monotonic()
            # The startup goes now, not after the transport is made: that takes two more turns of the
            # loop, each a whole tick of a loaded generator, which a real agent does not have.
            first = self.owner.first_frame(self)
            if first:
                try:
                    sent = sock.send(first)
                except BlockingIOError:
                    sent = 0
                self.unsent_first = first[sent:]
            await loop.create_connection(lambda: self, sock=sock)
        except BaseException:
            if sock.fileno() != -1:  # uvloop detaches a socket it has already closed
                sock.close()
            raise

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.unsent_first:  # a fresh socket takes a startup whole; this is the exception
            self.write(self.unsent_first)
            self.unsent_first = b""

    def data_received(self, data: bytes) -> None:
        if self.closing or self.agent.connection is not self:
            return
        try:
            frames = self.decoder.feed(data)
        except WireError:
            self.owner.bad_stream(self)
            return
        for frame in frames:
            self.owner.on_message(self, frame)
            if self.agent.connection is not self:
                return

    def write(self, data: bytes) -> bool:
        transport = cast(asyncio.Transport, self.transport)
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self.owner.error("backpressure")
            return False
        transport.write(data)
        return True

    def unsent(self) -> int:
        transport = cast(asyncio.Transport, self.transport)
        if transport is None or self.lost:
            return 0
        return transport.get_write_buffer_size()

    def writable(self) -> bool:
        transport = cast(asyncio.Transport, self.transport)
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self.owner.error("backpressure")
            return False
        return True

    def pause(self) -> None:
        transport = cast(asyncio.Transport, self.transport)
        if transport is not None and not transport.is_closing():
            transport.pause_reading()


class UdpConnection(SimConnection, asyncio.DatagramProtocol):
    __slots__ = ()

    async def open(self, address: tuple[str, int]) -> None:
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: self, local_addr=(self.agent.source, 0), remote_addr=address
        )

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.closing and self.agent.connection is self and self.agent.state != SILENT:
            self.owner.on_message(self, data)

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable and the like: the handshake timeout deals with it."""

    def write(self, data: bytes) -> bool:
        transport = cast(asyncio.DatagramTransport, self.transport)
        if transport is None or transport.is_closing():
            return False
        transport.sendto(data)
        return True


def connect_error(error: OSError) -> str:
    """The error kind a failed connect counts as."""
    if isinstance(error, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(error, TimeoutError):
        return "connect_timeout"
    if error.errno == 99:  # EADDRNOTAVAIL: no free port left for this source address
        return "no_free_port"
    return "connect_error"
