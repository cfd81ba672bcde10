"""The agent's side of one connection to a manager, over asyncio streams-free protocols.

`AgentCodec` is sans-IO: it turns messages into frames and frames into manager messages for one agent key.
`AgentConnection` wraps it around a TCP or UDP transport and hands received messages to a queue. The agent
daemon, the fleet simulator and the end-to-end tests all speak through these two.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.errors import WireError
from agentpulse.wire.frames import FrameDecoder, encode_frame
from agentpulse.wire.keys import AgentKey
from agentpulse.wire.secure import AgentCipher, CipherKind, compress, split_header


@dataclass
class AgentCodec:
    key: AgentKey
    cipher_kind: CipherKind = CipherKind.AES
    counter: SenderCounter = field(default_factory=SenderCounter)
    tcp: bool = True

    def __post_init__(self) -> None:
        self.cipher = AgentCipher.for_key(self.key.id, self.key.name, self.key.key)
        # An agent whose own entry is not a single host prefixes every message with !<id>! (as agentd does).
        self.prefix = None if self.key.ip.single_host else self.key.id

    def seal(self, payload: bytes, *, compressor: Callable[[bytes], bytes] = compress) -> bytes:
        global_counter, local_counter = self.counter.advance()
        sealed = self.cipher.seal(
            payload,
            cipher=self.cipher_kind,
            rand=random.getrandbits(16),
            global_counter=global_counter,
            local_counter=local_counter,
            agent_id=self.prefix,
            compressor=compressor,
        )
        return encode_frame(sealed) if self.tcp else sealed

    def open(self, payload: bytes) -> control.FromManager:
        return control.parse_from_manager(self.cipher.open(split_header(payload)).payload)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, connection: AgentConnection) -> None:
        self.connection = connection
        self.decoder = FrameDecoder()

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self.decoder.feed(data):
                self.connection.deliver(frame)
        except WireError as error:
            self.connection.fail(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.lost(exc)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, connection: AgentConnection) -> None:
        self.connection = connection

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.connection.deliver(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.lost(exc)


Received = control.FromManager | WireError | None  # None: the connection closed


class AgentConnection:
    """One agent's connection. Messages from the manager arrive in `received` (None when it closes)."""

    def __init__(self, codec: AgentCodec) -> None:
        self.codec = codec
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.transport: asyncio.BaseTransport | None = None
        self.closed = asyncio.Event()
        self.messages_sent = 0

    @classmethod
    async def open(
        cls,
        codec: AgentCodec,
        host: str,
        port: int,
        *,
        local_addr: tuple[str, int] | None = None,
        timeout: float = 10.0,
    ) -> AgentConnection:
        loop = asyncio.get_running_loop()
        connection = cls(codec)
        transport: asyncio.BaseTransport
        if codec.tcp:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _TcpProtocol(connection), host, port, local_addr=local_addr),
                timeout,
            )
        else:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(connection), remote_addr=(host, port), local_addr=local_addr
            )
        connection.transport = transport
        return connection

    def deliver(self, payload: bytes) -> None:
        try:
            message: Received = self.codec.open(payload)
        except WireError as error:
            message = error
        self.received.put_nowait(message)

    def fail(self, error: WireError) -> None:
        self.received.put_nowait(error)
        self.close()

    def lost(self, exc: Exception | None) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.received.put_nowait(None)

    def send(self, payload: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionError("connection is closed")
        data = self.codec.seal(payload)
        if self.codec.tcp:
            cast(asyncio.WriteTransport, transport).write(data)
        else:
            cast(asyncio.DatagramTransport, transport).sendto(data)
        self.messages_sent += 1

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are: for tests of what the manager does with bad input."""
        cast(asyncio.WriteTransport, self.transport).write(data)

    async def receive(self, timeout: float = 10.0) -> Received:
        return await asyncio.wait_for(self.received.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without a FIN handshake, like a killed process's socket (RST)."""
        transport = self.transport
        if transport is None:
            return
        if self.codec.tcp:
            cast(asyncio.Transport, transport).abort()
        else:
            transport.close()
