"""Issue 17, item 6: the query socket cannot be locked. A real manager; clients that connect to
queue/db/wdb and say nothing hold every slot, yet `agentpulse wdb` is answered at once (the client idle
the longest makes room), and idle clients are closed after <database><wdb_idle_timeout>."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from agentpulse.wdb.client import WdbClient
from tests.e2e.harness import ManagerProcess, ManagerSettings, run_cli
from tests.wdb.served import read_answer

SLOTS = 64  # the default <wdb_max_clients>
IDLE_TIMEOUT = 2.0
ANSWER_WITHIN = 2.0  # seconds, on a loaded machine


@contextlib.contextmanager
def idle_clients(manager: ManagerProcess, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that send nothing, each accepted by the manager (it had room, or made some)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(connect(manager))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def connect(manager: ManagerProcess) -> socket.socket:
    for _ in range(500):  # bounded: a full listen backlog (EAGAIN) clears as the manager accepts
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(str(manager.home.wdb_socket))
            return sock
        except BlockingIOError:
            sock.close()
            time.sleep(0.01)
    raise AssertionError("the query socket's backlog never cleared")


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return read_answer(sock) is None
    except TimeoutError:
        return False


@pytest.fixture
def started(manager: ManagerProcess) -> ManagerProcess:
    manager.settings = ManagerSettings(database=f"<wdb_idle_timeout>{IDLE_TIMEOUT}</wdb_idle_timeout>")
    manager.add_agents(1)
    manager.start()
    return manager


def test_the_cli_is_answered_while_idle_clients_hold_every_slot(started: ManagerProcess) -> None:
    with idle_clients(started, SLOTS) as squatters:
        began = time.monotonic()
        with WdbClient(started.home.wdb_socket, timeout=10) as client:
            assert client.query("global select-agent-name 1") == 'ok [{"name":"agent-00001"}]'
        assert time.monotonic() - began < ANSWER_WITHIN
        done = run_cli("agentpulse", "wdb", "global select-agent-name 1", home=started.root)
        assert (done.returncode, done.stdout) == (0, 'ok [{"name":"agent-00001"}]\n'), done.stderr
        assert closed_by_server(squatters[0], 1.0)  # the one idle the longest made room
    assert "slots taken; the client waiting for" in started.output()


def test_twice_as_many_idle_clients_as_slots_never_lock_the_socket(started: ManagerProcess) -> None:
    with idle_clients(started, SLOTS), idle_clients(started, SLOTS):  # twice the slots: half were closed
        for _ in range(5):
            began = time.monotonic()
            with WdbClient(started.home.wdb_socket, timeout=10) as client:
                assert client.query("global select-groups").startswith("ok")
            assert time.monotonic() - began < ANSWER_WITHIN


def test_idle_clients_are_closed_after_the_idle_timeout(started: ManagerProcess) -> None:
    with idle_clients(started, 8) as squatters:
        began = time.monotonic()
        assert all(closed_by_server(sock, IDLE_TIMEOUT + 5) for sock in squatters)
        assert IDLE_TIMEOUT - 0.5 < time.monotonic() - began < IDLE_TIMEOUT + 5


def test_a_client_between_requests_is_kept_until_the_idle_timeout(started: ManagerProcess) -> None:
    with WdbClient(started.home.wdb_socket, timeout=10) as client:
        for _ in range(3):
            time.sleep(IDLE_TIMEOUT / 3)
            assert client.query("global select-agent-name 1").startswith("ok")
