"""`EnrolConnection`: one enrolment connection after its TLS handshake, read for one request line.

It reads at most `MAX_REQUEST` bytes within `REQUEST_TIMEOUT`, then stops reading and hands the line to
its owner (the service), which answers once with `reply()`. Everything it receives comes from anyone:
it never logs, it says why it gives up (`refuse_quietly`) and the owner decides what is logged.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from agentpulse.wire.enrolment import MAX_REQUEST

REQUEST_TIMEOUT: Final = 10.0  # after the handshake, for the whole request line


class ConnectionOwner(Protocol):
    """What a connection tells the enrolment service (authd/service.py)."""

    def peer_allowed(self, connection: EnrolConnection) -> bool: ...

    def refuse_quietly(self, connection: EnrolConnection, why: str) -> None: ...

    def received(self, connection: EnrolConnection, line: bytes) -> None: ...

    def connection_closed(self, connection: EnrolConnection) -> None: ...


class EnrolConnection(asyncio.Protocol):
    """One TLS connection: read one line, hand it to the service, write the one reply, close."""

    def __init__(self, service: ConnectionOwner, source: str) -> None:
        self.service = service
        self.source = source
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._done = False  # a whole line came (or the connection was refused): read no more

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports duck-type Transport
        if not self.service.peer_allowed(self):
            self.close()
            return
        self._timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        end = data.find(b"\n")
        if end < 0:
            self._buffer += data
            if len(self._buffer) >= MAX_REQUEST:
                self.service.refuse_quietly(self, f"a request longer than {MAX_REQUEST} bytes")
            return
        self._buffer += data[: end + 1]
        if len(self._buffer) > MAX_REQUEST:
            self.service.refuse_quietly(self, f"a request longer than {MAX_REQUEST} bytes")
            return
        self._done = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.pause_reading()
        line, self._buffer = bytes(self._buffer), bytearray()
        self.service.received(self, line)

    def eof_received(self) -> bool | None:
        if not self._done:
            self.service.refuse_quietly(self, "a connection closed before its request")
        return None

    def _timed_out(self) -> None:
        self._timer = None
        if not self._done:
            self.service.refuse_quietly(self, f"no request within {REQUEST_TIMEOUT:g} s")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def reply(self, data: bytes) -> None:
        """One write, then the manager closes (reference 14.3)."""
        if self.open:
            assert self.transport is not None
            self.transport.write(data)
        self.close()

    def close(self) -> None:
        self._done = True
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self._cancel_timer()
        self.service.connection_closed(self)
