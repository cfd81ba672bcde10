"""The HTTP server over real loopback sockets: keep-alive, limits, malformed heads."""

from __future__ import annotations

import asyncio

from agentpulse.api.http import HttpServer, Request, Response, Stream, parse_head


def test_parse_head() -> None:
    method, path, query, headers = parse_head(
        b"GET /agents%20x?status=active&q=a%3Db HTTP/1.1\r\nHost: x\r\nX-A:  1 "
    )
    assert (method, path, query) == ("GET", "/agents x", [("status", "active"), ("q", "a=b")])
    assert headers == {"host": "x", "x-a": "1"}


def test_keep_alive_limits_and_streams() -> None:
    async def handler(request: Request) -> Response | Stream:
        if request.path == "/stream":

            async def chunks():  # type: ignore[no-untyped-def]
                yield b"data: 1\n\n"

            return Stream(chunks())
        return Response(200, request.body or request.path.encode(), "text/plain")

    async def scenario() -> None:
        server = HttpServer(handler, "127.0.0.1", 0, max_connections=2)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
            )
            await writer.drain()
            first = await reader.readuntil(b"/a")
            second = await reader.readuntil(b"xyz")
            assert first.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 2" in first
            assert second.startswith(b"HTTP/1.1 200 OK")
            writer.write(b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert (await reader.read(100)).startswith(b"HTTP/1.1 501")
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /x HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n")
            assert (await reader.read(100)).startswith(b"HTTP/1.1 431")
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"garbage\r\n\r\n")
            assert (await reader.read(100)).startswith(b"HTTP/1.1 400")
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /stream HTTP/1.1\r\n\r\n")
            body = await asyncio.wait_for(reader.read(), 5)
            assert b"text/event-stream" in body and body.endswith(b"data: 1\n\n")
            writer.close()
        finally:
            await server.stop()

    asyncio.run(scenario())
