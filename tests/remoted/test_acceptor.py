"""The paced listener: a batch per loop iteration, none beyond the handshake budget, the oldest queued
connections refused (cleanly) once the queue holds more than SHED_WAIT seconds of work, and none taken
while the loop is behind on the agents it holds (the lag guard)."""

from __future__ import annotations

import asyncio
import socket
import time

from agentpulse.looplag import LoopLag
from agentpulse.remoted import acceptor
from agentpulse.remoted.acceptor import ACCEPT_BATCH, SHED_WAIT, Acceptor, listening_socket
from agentpulse.remoted.lagguard import HOLD_LAG, REFUSE_AFTER, RESUME_AFTER


class Sink(asyncio.Protocol):
    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Sink.made += 1


def _queue(port: int, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"startup")
        clients.append(client)
    return clients


def _wait_queued(server: Acceptor, count: int) -> None:
    deadline = time.monotonic() + 5
    while server.queued() < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_one_batch_per_iteration_and_nothing_beyond_the_budget() -> None:
    async def scenario() -> None:
        sock = listening_socket("127.0.0.1", 0, 1024, reuse_port=False)
        waiting = [0]
        server = Acceptor(sock, Sink, waiting=lambda: waiting[0], handshakes=lambda: 0)
        clients = _queue(sock.getsockname()[1], 200)
        _wait_queued(server, 200)
        assert server.queued() == 200
        server._readable()
        assert server.accepted == ACCEPT_BATCH
        waiting[0] = server.budget  # as many waiting for their answer as the budget allows
        server._readable()
        assert server.accepted == ACCEPT_BATCH and server.paused_times == 1
        waiting[0] = 0
        server.start()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if server.accepted == 200:
                break
        assert server.accepted == 200
        server.close()
        for client in clients:
            client.close()

    asyncio.run(scenario())


def test_a_queue_longer_than_the_work_agents_wait_for_is_refused_oldest_first_with_a_fin() -> None:
    async def scenario() -> None:
        sock = listening_socket("127.0.0.1", 0, 1024, reuse_port=False)
        server = Acceptor(sock, Sink, waiting=lambda: 0, handshakes=lambda: 0)
        server.best_rate = 1.0  # one handshake a second: SHED_WAIT connections are all it can serve in time
        server._busy_windows = acceptor.SHED_AFTER  # measured while busy
        clients = _queue(sock.getsockname()[1], int(SHED_WAIT) + 20)
        _wait_queued(server, len(clients))
        server._shed(time.monotonic())
        assert server.shed == 20
        assert server.queued() == int(SHED_WAIT)
        clients[0].settimeout(2)
        assert clients[0].recv(10) == b""  # the oldest: closed cleanly (FIN), not reset
        server.close()
        for client in clients:
            client.close()

    asyncio.run(scenario())


def test_the_measured_rate_sets_the_budget() -> None:
    count = [0]
    now = [100.0]
    sock = listening_socket("127.0.0.1", 0, 16, reuse_port=False)
    server = Acceptor(sock, Sink, waiting=lambda: 0, handshakes=lambda: count[0], monotonic=lambda: now[0])
    assert server.budget == acceptor.BUDGET_MIN
    count[0], now[0] = 1000, 101.0  # 1,000 handshakes in the last second
    server._measure(now[0])
    assert server.best_rate == 1000.0
    assert server.budget == int(1000 * acceptor.HANDSHAKE_TARGET)
    sock.close()


def test_at_the_unauthenticated_cap_it_takes_one_new_connection_per_evictable_oldest() -> None:
    async def scenario() -> None:
        sock = listening_socket("127.0.0.1", 0, 1024, reuse_port=False)
        evictable = [0]
        server = Acceptor(
            sock,
            Sink,
            waiting=lambda: 40,  # at the cap, all of them waiting
            handshakes=lambda: 0,
            evictable=lambda limit: min(limit, evictable[0]),
            budget_max=40,
        )
        clients = _queue(sock.getsockname()[1], 10)
        _wait_queued(server, 10)
        server._readable()  # none the admission may close: held back, as before
        assert (server.accepted, server.paused_times) == (0, 1)
        evictable[0] = 6
        server._look()
        server._readable()
        assert server.accepted == 6
        server.close()
        for client in clients:
            client.close()

    asyncio.run(scenario())


def _lagging_acceptor(now: list[float]) -> tuple[socket.socket, LoopLag, Acceptor]:
    """An acceptor on a clock the test moves (`now[0]`) and a loop lag it sets (`lag.current`: the lag is
    never started)."""
    sock = listening_socket("127.0.0.1", 0, 1024, reuse_port=False)
    lag = LoopLag(monotonic=lambda: now[0])
    server = Acceptor(sock, Sink, waiting=lambda: 0, handshakes=lambda: 0, lag=lag, monotonic=lambda: now[0])
    return sock, lag, server


def test_a_loop_behind_on_its_agents_takes_no_newcomer_until_it_has_caught_up() -> None:
    async def scenario() -> None:
        now = [1000.0]
        sock, lag, server = _lagging_acceptor(now)
        clients = _queue(sock.getsockname()[1], 10)
        _wait_queued(server, 10)
        lag.current = HOLD_LAG + 1.0  # keep-alives alone: no handshake in flight
        server._readable()
        assert server.accepted == 0 and server.guard.held
        assert server.queued() == 10  # they wait in the kernel's queue
        lag.current = 0.1
        now[0] += 1.0
        server._look()  # caught up, not for long enough yet
        assert server.accepted == 0
        now[0] += RESUME_AFTER
        server._look()  # back under RESUME_LAG for RESUME_AFTER: open again
        server._readable()
        assert server.accepted == 10 and not server.guard.held
        await asyncio.sleep(0.05)  # the accepted connections set up
        server.close()
        for client in clients:
            client.close()

    asyncio.run(scenario())


def test_held_past_refuse_after_the_queued_connections_are_refused_with_a_fin() -> None:
    async def scenario() -> None:
        now = [1000.0]
        sock, lag, server = _lagging_acceptor(now)
        lag.current = HOLD_LAG + 1.0
        server._readable()  # the hold begins
        clients = _queue(sock.getsockname()[1], 5)
        _wait_queued(server, 5)
        now[0] += REFUSE_AFTER - 1.0
        server._look()
        assert server.refused_held == 0 and server.queued() == 5  # held, not long enough to refuse
        now[0] += 1.0
        server._look()
        assert server.refused_held == 5 and server.accepted == 0
        clients[0].settimeout(2)
        assert clients[0].recv(10) == b""  # closed cleanly (FIN), not reset
        server.close()
        for client in clients:
            client.close()

    asyncio.run(scenario())
