"""One enrolment connection's reading rules: one line, at most MAX_REQUEST bytes, then no more reading."""

from __future__ import annotations

import asyncio

from agentpulse.authd.connection import EnrolConnection
from agentpulse.wire.enrolment import MAX_REQUEST


class Owner:
    """Records what the connection tells the service."""

    def __init__(self, allowed: bool = True) -> None:
        self.allowed = allowed
        self.lines: list[bytes] = []
        self.refusals: list[str] = []
        self.closed = 0

    def peer_allowed(self, connection: EnrolConnection) -> bool:
        return self.allowed

    def refuse_quietly(self, connection: EnrolConnection, why: str) -> None:
        self.refusals.append(why)
        connection.close()

    def received(self, connection: EnrolConnection, line: bytes) -> None:
        self.lines.append(line)

    def connection_closed(self, connection: EnrolConnection) -> None:
        self.closed += 1


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.paused = True


def opened(owner: Owner) -> tuple[EnrolConnection, Transport]:
    connection = EnrolConnection(owner, "127.0.0.1")
    transport = Transport()
    connection.connection_made(transport)
    return connection, transport


def test_a_line_in_pieces_is_handed_over_once_and_reading_stops() -> None:
    async def scenario() -> None:
        owner = Owner()
        connection, transport = opened(owner)
        connection.data_received(b"OSSEC A:'web")
        connection.data_received(b"-01'\nafter the line")
        connection.data_received(b"more\n")
        assert owner.lines == [b"OSSEC A:'web-01'\n"]
        assert transport.paused and not owner.refusals
        connection.reply(b"OSSEC K:'001 web-01 any key'\n")
        assert transport.written == b"OSSEC K:'001 web-01 any key'\n" and transport.closing
        connection.connection_lost(None)
        assert owner.closed == 1

    asyncio.run(scenario())


def test_a_request_over_the_limit_is_refused_without_a_newline() -> None:
    async def scenario() -> None:
        owner = Owner()
        connection, transport = opened(owner)
        connection.data_received(b"x" * MAX_REQUEST)
        assert owner.refusals == [f"a request longer than {MAX_REQUEST} bytes"]
        assert owner.lines == [] and transport.closing

    asyncio.run(scenario())


def test_a_peer_not_allowed_is_closed_at_once_and_a_close_before_the_line_is_said() -> None:
    async def scenario() -> None:
        owner = Owner(allowed=False)
        _, transport = opened(owner)
        assert transport.closing
        other = Owner()
        connection, _ = opened(other)
        connection.data_received(b"OSSEC A:'half")
        connection.eof_received()
        assert other.refusals == ["a connection closed before its request"]

    asyncio.run(scenario())
