"""A store and its query socket on an event loop of their own thread, for tests that talk to the socket
the way a separate process would (blocking client, raw bytes)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from agentpulse.paths import Home
from agentpulse.store.facade import Store
from agentpulse.store.sqlite import schema
from agentpulse.wdb.client import WdbClient
from agentpulse.wdb.server import WdbServer
from agentpulse.wire.frames import LENGTH
from agentpulse.wire.keys import KeysFile

T = TypeVar("T")


def keys_text(count: int, first: int = 1) -> str:
    return "".join(f"{n:03d} agent-{n:05d} any {n:064x}\n" for n in range(first, first + count))


class Served:
    def __init__(
        self,
        root: Path,
        agents: int = 5,
        *,
        allow_sql: str = "read-only",
        sent: list[tuple[list[int], bytes]] | None = None,
        **server_options: Any,
    ) -> None:
        self.home = Home(root)
        self.home.create_layout()
        self.sent = sent if sent is not None else []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="served-loop", daemon=True)
        self._thread.start()
        self.store = Store(self.home.db_dir, manager_host="mgr", node_name="node01", flush_interval=0.05)
        self.store.open(list(KeysFile.parse(keys_text(agents)).active()))
        self.server = WdbServer(
            self.store,
            self.home.wdb_socket,
            allow_sql=allow_sql,
            send_to_agents=self._send,
            **server_options,
        )
        self.run(self.server.start())

    def _send(self, ids: list[int], payload: bytes) -> int:
        self.sent.append((ids, payload))
        return len(ids) // 2

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def on_loop(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()

        return self.run(call())

    def client(self) -> WdbClient:
        return WdbClient(self.home.wdb_socket, timeout=10)

    def query(self, text: str) -> str:
        with self.client() as client:
            return client.query(text)

    def raw(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(self.home.wdb_socket))
        return sock

    def rows(self, sql: str, *params: object) -> list[sqlite3.Row]:
        db = schema.connect(self.store.global_db, readonly=True)
        try:
            return list(db.execute(sql, params))
        finally:
            db.close()

    def close(self) -> None:
        self.run(self.server.stop())
        self.store.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def history(served: Served, agent_id: int) -> list[tuple[str, str, int]]:
    return [
        (row[0], row[1], row[2])
        for row in served.rows(
            "SELECT from_status, to_status, status_code FROM agent_status_history WHERE agent_id = ? ORDER BY seq",
            agent_id,
        )
    ]


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def read_answer(sock: socket.socket) -> bytes | None:
    """One framed answer, or None when the server closed the connection."""
    header = _exactly(sock, LENGTH.size)
    if header is None:
        return None
    (length,) = LENGTH.unpack(header)
    return _exactly(sock, length)


def _exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        try:
            chunk = sock.recv(count - len(data))
        except ConnectionResetError:  # closed with our request unread
            return None
        if not chunk:
            return None
        data += chunk
    return data
