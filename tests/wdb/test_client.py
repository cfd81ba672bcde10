"""WdbClient against a served socket: `ok` payloads decoded, `err` raised, pages followed to the end."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest

from agentpulse.paths import Home
from agentpulse.wdb.client import WdbClient, WdbUnavailable
from agentpulse.wdb.protocol import WdbError
from tests.wdb.served import Served


def test_query_json_decodes_ok_and_raises_err(served: Served) -> None:
    with served.client() as client:
        assert client.query_json("global select-agent-name 2") == [{"name": "agent-00002"}]
        with pytest.raises(WdbError, match="Invalid DB query syntax, near 'nope'"):
            client.query_json("global nope")


def test_query_pages_follows_due_to_the_last_page(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", agents=8000)
    try:
        with served.client() as client:
            rows = client.query_pages("global get-all-agents last_id {last}")
        assert [row["id"] for row in rows] == list(range(1, 8001))
    finally:
        served.close()


def test_a_full_listen_backlog_is_waited_out_not_an_error(tmp_path: Path) -> None:
    # A flood of connections can fill the socket's backlog faster than the manager accepts (and closes
    # them to make room); a Unix socket then refuses with EAGAIN, where a local tool must wait its turn.
    path = tmp_path / "wdb"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    queued: list[socket.socket] = []
    try:
        for _ in range(16):  # bounded: Linux queues backlog + 1
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(str(path))
            except BlockingIOError:
                sock.close()
                break
            queued.append(sock)
        else:
            pytest.skip("the backlog never filled")
        listener.settimeout(5)

        def accept_all() -> None:
            with contextlib.suppress(OSError):
                for _ in range(len(queued) + 1):
                    listener.accept()[0].close()

        accepter = threading.Timer(0.3, accept_all)
        accepter.start()
        with WdbClient(path, timeout=5):
            pass
        accepter.join(5)
    finally:
        for sock in queued:
            sock.close()
        listener.close()


def test_no_manager_is_wdb_unavailable(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.create_layout()
    with pytest.raises(WdbUnavailable):
        WdbClient(home.wdb_socket)
