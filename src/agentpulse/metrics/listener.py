"""The standalone `/metrics` listener: just enough HTTP/1.x for a Prometheus scrape, on the manager's loop.

Used when `<metrics><enabled>yes` (metrics also work without the HTTP API, which serves the same
`render` at its own `/metrics`). The danger is anyone who can reach the port: a request head is bounded
in size (`HEAD_MAX`) and time (`REQUEST_TIMEOUT`), connections in number (`MAX_CLIENTS`), one request per
connection, and nothing a client sends is ever logged or echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from agentpulse.config.metrics import MetricsConfig
from agentpulse.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

Render = Callable[[], tuple[bytes, str]]
PATH = "/metrics"
HEAD_MAX = 8192  # bytes of request line and headers
REQUEST_TIMEOUT = 5.0  # seconds for the whole request head
MAX_CLIENTS = 32  # connections at once; more are closed at once


def response(status: str, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + body


def answer(request_line: bytes, render: Render) -> bytes:
    """The whole response to one request line (`GET /metrics HTTP/1.1`)."""
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return response("400 Bad Request", b"bad request\n", "text/plain; charset=utf-8")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return response("405 Method Not Allowed", b"only GET\n", "text/plain; charset=utf-8")
    if target != PATH.encode():
        return response("404 Not Found", b"see /metrics\n", "text/plain; charset=utf-8")
    body, content_type = render()
    return response("200 OK", body, content_type, head_only=method == b"HEAD")


class MetricsListener:
    """A manager service: `start()` listens on `<metrics><host>:<port>`, `stop()` closes it."""

    def __init__(self, config: MetricsConfig, render: Render) -> None:
        self.config = config
        self.render = render
        self.port = 0  # as bound (the configured one, or a free one for port 0)
        self.clients = 0
        self.warn = RateLimitedLog(log)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.config.host, self.config.port, limit=HEAD_MAX, reuse_address=True
            )
        except OSError as error:
            raise OSError(
                error.errno,
                f"cannot listen on {self.config.host}:{self.config.port} for metrics: {error.strerror}",
            ) from error
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("Metrics on http://%s:%d%s", self.config.host, self.port, PATH)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), REQUEST_TIMEOUT)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            writer.transport.abort()
            return
        self.clients += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            writer.write(answer(head.split(b"\r\n", 1)[0], self.render))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # a client that went away, sent too much or too slowly: nothing to answer
        except Exception as error:  # a scrape that failed must not take the listener with it
            self.warn.error("render", "metrics: a scrape failed: %s: %s", type(error).__name__, error)
            writer.write(response("500 Internal Server Error", b"error\n", "text/plain; charset=utf-8"))
        finally:
            self.clients -= 1
            writer.close()
