"""A small HTTP/1.1 server on the manager's event loop: requests in, `Response`s or event streams out.

It serves what the API needs and nothing more: Content-Length bodies (no chunked uploads), keep-alive,
one request at a time per connection, and streamed replies (Server-Sent Events) that end the connection.
The danger is a client that holds resources: every read has a deadline, heads and bodies have a size
limit, and connections past `max_connections` are closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from agentpulse.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

MAX_HEAD: Final = 16 * 1024
MAX_BODY: Final = 1024 * 1024
HEAD_TIMEOUT: Final = 30.0  # seconds for a request head, and an idle keep-alive connection
BODY_TIMEOUT: Final = 30.0
WRITE_TIMEOUT: Final = 30.0


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes
    client: str  # the peer address

    def param(self, name: str) -> str | None:
        """The last value of a query parameter, or None."""
        found = None
        for key, value in self.query:
            if key == name:
                found = value
        return found


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Stream:
    """A reply written as it is produced (SSE); the connection closes when the iterator ends."""

    chunks: AsyncIterator[bytes]
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response | Stream]]


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]], dict[str, str]]:
    """Method, path, query pairs and headers of a request head (without its final blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(HTTPStatus.BAD_REQUEST, "Invalid request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "Invalid request line")
    method, target, _ = parts
    if not method.isalpha() or not target.startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "Invalid request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Invalid header line")
        headers[name.lower()] = value.strip()
    split = urlsplit(target)
    query = parse_qsl(split.query, keep_blank_values=True, max_num_fields=200)
    return method.upper(), unquote(split.path), query, headers


def render_head(status: int, headers: dict[str, str]) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpServer:
    """Serves `handler` on host:port (TLS with `ssl_context`) until `stop()`."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 256,
        base_headers: dict[str, str] | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.base_headers = base_headers or {}
        self.refusals = RateLimitedLog(log)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.requests = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self.ssl_context, limit=MAX_HEAD, reuse_address=True
        )
        sockets = self._server.sockets
        if sockets and self.port == 0:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.max_connections or task is None:
            self.refusals.warning(
                "http-full", "HTTP API: %d connections open, one more closed", len(self._connections)
            )
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "local"
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except asyncio.LimitOverrunError:
                await self._write(
                    writer, Response(431, b'{"title":"Request Header Fields Too Large"}'), False
                )
                return
            except asyncio.IncompleteReadError:
                return
            try:
                method, path, query, headers = parse_head(head[:-4])
                body = await self._body(reader, headers)
            except BadRequest as error:
                self.refusals.warning("http-bad", "HTTP API: bad request from %s: %s", client, error.detail)
                payload = b'{"title":"Bad Request","detail":"' + error.detail.encode() + b'"}'
                await self._write(writer, Response(int(error.status), payload), False)
                return
            self.requests += 1
            keep = headers.get("connection", "").lower() != "close"
            reply = await self.handler(Request(method, path, query, headers, body, client))
            if isinstance(reply, Stream):
                await self._stream(writer, reply)
                return
            await self._write(writer, reply, keep, head_only=method == "HEAD")
            if not keep:
                return

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "transfer-encoding" in headers:
            raise BadRequest(HTTPStatus.NOT_IMPLEMENTED, "Transfer-Encoding is not supported")
        text = headers.get("content-length", "0")
        if not text.isascii() or not text.isdigit():
            raise BadRequest(HTTPStatus.BAD_REQUEST, "Invalid Content-Length")
        length = int(text)
        if length > MAX_BODY:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
        return await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT) if length else b""

    async def _write(
        self, writer: asyncio.StreamWriter, reply: Response, keep: bool, *, head_only: bool = False
    ) -> None:
        headers = {
            **self.base_headers,
            "Content-Type": reply.content_type,
            "Content-Length": str(len(reply.body)),
            "Connection": "keep-alive" if keep else "close",
            **reply.headers,
        }
        writer.write(render_head(reply.status, headers) + (b"" if head_only else reply.body))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _stream(self, writer: asyncio.StreamWriter, reply: Stream) -> None:
        headers = {
            **self.base_headers,
            "Content-Type": reply.content_type,
            "Cache-Control": "no-store",
            "Connection": "close",
            **reply.headers,
        }
        writer.write(render_head(200, headers))
        try:
            async for chunk in reply.chunks:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        finally:
            aclose = getattr(reply.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
