"""`AnalysisdSink`: each event's Wazuh line to a Unix datagram socket, as remoted writes `queue/sockets/queue`.

So agentpulse can stand in front of a real wazuh-analysisd. It never blocks the loop: when the reader's
queue is full, lines wait in a bounded backlog (`BACKLOG_LINES`) sent as soon as the socket is writable
again. Past that backlog, or while the socket is missing, lines are lost (counted, one rate-limited log
line; reconnects at most once a second). NATS remains the sink that loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from typing import Final

from agentpulse.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

RECONNECT_INTERVAL: Final = 1.0
SEND_BUFFER: Final = 4 << 20
BACKLOG_LINES: Final = 100_000


class AnalysisdSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.lost = 0
        self.sent = 0
        self._backlog: deque[bytes] = deque()
        self._writer = False
        self._tried_at = -RECONNECT_INTERVAL
        self._warn = RateLimitedLog(log)

    def _connect(self) -> socket.socket | None:
        now = time.monotonic()
        if now - self._tried_at < RECONNECT_INTERVAL:
            return None
        self._tried_at = now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            sock.connect(self.path)
        except OSError as error:
            sock.close()
            self._warn.warning("analysisd-connect", "analysisd socket %s unavailable: %s", self.path, error)
            return None
        self.sock = sock
        return sock

    def send(self, line: bytes) -> None:
        if self._backlog:
            self._queue(line)
            return
        sock = self.sock or self._connect()
        if sock is None:
            self._lose(1, "unavailable")
            return
        try:
            sock.send(line)
            self.sent += 1
        except BlockingIOError:
            self._queue(line)
        except OSError as error:
            self._broken(sock, error)
            self._lose(1, "unavailable")

    def _queue(self, line: bytes) -> None:
        if len(self._backlog) >= BACKLOG_LINES:
            self._lose(1, "full")
            return
        self._backlog.append(line)
        if not self._writer and self.sock is not None:
            asyncio.get_running_loop().add_writer(self.sock.fileno(), self._drain)
            self._writer = True

    def _drain(self) -> None:
        sock = self.sock
        backlog = self._backlog
        try:
            while backlog and sock is not None:
                sock.send(backlog[0])
                backlog.popleft()
                self.sent += 1
        except BlockingIOError:
            return
        except OSError as error:
            self._broken(sock, error)
            self._lose(len(backlog), "unavailable")
            backlog.clear()
        self._stop_writer(sock)

    def _stop_writer(self, sock: socket.socket | None) -> None:
        if self._writer and sock is not None:
            asyncio.get_running_loop().remove_writer(sock.fileno())
        self._writer = False

    def _broken(self, sock: socket.socket | None, error: OSError) -> None:
        self._stop_writer(sock)
        self.sock = None
        if sock is not None:
            sock.close()
        self._warn.warning("analysisd-send", "analysisd socket %s: %s", self.path, error)

    def _lose(self, count: int, why: str) -> None:
        self.lost += count
        self._warn.warning(
            f"analysisd-{why}",
            "analysisd socket %s %s: %d event lines lost so far",
            self.path,
            why,
            self.lost,
        )

    def close(self) -> None:
        self._stop_writer(self.sock)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
