"""The TCP listener, paced: new connections are taken at the rate this process serves handshakes.

asyncio's own server accepts everything the kernel queued in one loop iteration, so a storm of 40,000
connects turns into 40,000 startups in the next one, and every established agent's keep-alive waits
behind them. `Acceptor` instead takes at most `batch` connections per loop iteration (fewer while the loop
lags: an iteration that takes a second accepts a trickle), and none while `budget` connections already
wait for their startup's answer. The budget is measured, not guessed: the handshakes this process completed
per second at its best over the last minute, times `HANDSHAKE_TARGET`, the wait an admitted agent may
expect (well within the agent's 60 s `recv_timeout`). What is not taken waits in the kernel's accept queue
(the listen backlog), or, when that is full, the kernel drops the SYN and the agent's connect retries.
A queue longer than `SHED_WAIT` seconds of work at the measured rate would be served after its agents
gave up (they wait 60 s): its oldest connections are refused at once instead, with a clean close (read,
then FIN, no decryption), and retry after their `retry_interval`. The danger is starving the listener:
it is paused only while connections it accepted wait, so it always comes back; and at the total cap of
unauthenticated connections (`budget_max`) it still takes one new connection for each of the oldest that
has waited over a second with nothing unread (admission closes those to make room, issue 17). One thing
does hold it shut: a loop behind on the agents it already holds (`LagGuard`, lagguard.py), until the
loop has caught up; held long, it refuses what queues instead (clean close), and always comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
from collections.abc import Callable

from agentpulse.looplag import LoopLag
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.remoted.lagguard import LagGuard

log = logging.getLogger(__name__)

ACCEPT_BATCH = 64  # connections taken per loop iteration at most
LAGGING_BATCH = 8  # ... while the loop lags more than LAGGING
LAGGING = 0.5  # seconds
HANDSHAKE_TARGET = 5.0  # seconds an admitted agent waits for its startup ack, at the measured rate
BUDGET_MIN = 256  # in flight whatever the measure says (a quiet process has measured nothing yet)
RATE_WINDOW = 1.0  # seconds per rate sample
RATE_HOLD = 60.0  # seconds the best rate is remembered
CONTROL_TICK = 0.05  # seconds between looks while paused
REPORT_INTERVAL = 10.0  # seconds between two "paced" lines while the listener is held back
SHED_WAIT = 20.0  # seconds of queued work past which the oldest are refused (agents wait 60 s; the
# measured rate is the best of the last minute, and may be twice the rate of the moment)
SHED_BATCH = 256  # refused per look at most
SHED_AFTER = 5  # rate windows in a row with a queue before shedding: the rate of a storm's first
# seconds (connections still coming, handshakes not yet at full speed) is no measure of the capacity
DEFER_ACCEPT_MAX = 30.0  # seconds: within the kernel's SYN-ACK retries (5 by default, ~31 s)
TCP_INFO_SIZE = 104
TCPI_UNACKED = 24  # offset of tcpi_unacked: on a listening socket, the accept queue's length


class Acceptor:
    """Accepts on `sock` into `factory()` protocols, paced by `waiting()` (connections accepted and not yet
    answered) against the measured handshake budget, and by the loop's lag."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        waiting: Callable[[], int],
        handshakes: Callable[[], int],
        evictable: Callable[[int], int] = lambda limit: 0,
        lag: LoopLag | None = None,
        answer_wait: Callable[[], float] = lambda: 0.0,
        budget_max: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.waiting = waiting  # accepted, startup not answered yet (Admission.in_flight)
        self.handshakes = handshakes  # completed so far (Admission.handshakes)
        self.evictable = evictable  # the oldest admission may close for new ones (Admission.evictable)
        self.lag = lag
        self.answer_wait = answer_wait  # how long the oldest admission question waits for the manager
        self.budget_max = budget_max  # 0: none (else max_unauthenticated: beyond it admission evicts)
        self.monotonic = monotonic
        self.warn = RateLimitedLog(log, monotonic=monotonic)
        self.accepted = 0
        self.paused_times = 0  # how often the budget paused the listener
        self.shed = 0  # refused at once from a queue longer than SHED_WAIT of work
        self.guard = LagGuard()  # established agents first: none taken while the loop is behind on them
        self.refused_held = 0  # refused at once while the guard held the listener long
        self._refused_this_hold = 0
        self._caught_up_at = -REPORT_INTERVAL
        self._shed_at = 0.0
        self._busy_windows = 0  # rate windows in a row that ended with connections queued
        self.best_rate = 0.0  # handshakes per second, best sample of the last RATE_HOLD seconds
        self._best_at = 0.0
        self._sample_at = monotonic()
        self._sample_count = handshakes()
        self._reading = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._reported_at = -REPORT_INTERVAL
        self._held_back = 0  # times the listener was held back since the last report

    @property
    def budget(self) -> int:
        budget = max(BUDGET_MIN, int(self.best_rate * HANDSHAKE_TARGET))
        return min(budget, self.budget_max) if self.budget_max else budget

    def start(self) -> None:
        self._resume()

    def close(self) -> None:
        self._closed = True
        self._pause()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sock.close()

    async def wait_closed(self) -> None:
        """The connections being set up when the listener closed are set up (or failed)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    # -- pacing -------------------------------------------------------------------------------------------

    def _measure(self, now: float) -> None:
        elapsed = now - self._sample_at
        if elapsed < RATE_WINDOW:
            return
        count = self.handshakes()
        rate = (count - self._sample_count) / elapsed
        self._sample_at, self._sample_count = now, count
        self._busy_windows = self._busy_windows + 1 if self.queued() else 0
        if rate >= self.best_rate or now - self._best_at > RATE_HOLD:
            self.best_rate, self._best_at = rate, now

    def _room(self) -> int:
        now = self.monotonic()
        self._measure(now)
        batch = ACCEPT_BATCH
        if self.lag is not None and self.lag.current > LAGGING:
            batch = LAGGING_BATCH
        waiting = self.waiting()
        if not self._guard_open(waiting, now):
            room = 0
        else:
            room = min(batch, self.budget - waiting)
            if room <= 0 and self.budget_max and waiting >= self.budget_max:
                # At max_unauthenticated admission closes the oldest unauthenticated for each new one, so
                # the work in flight does not grow; held back here, idle hostile connections would keep
                # agents in the kernel's queue until their frame_timeout. Only those the loop owes nothing
                # make room.
                room = self.evictable(batch)
        if room < ACCEPT_BATCH:
            self._held_back += 1
            if now - self._reported_at >= REPORT_INTERVAL:
                self._report(now)
        return room

    def _guard_open(self, waiting: int, now: float) -> bool:
        """The lag guard's word (always open without a lag to read), with a line when a hold begins or ends."""
        if self.lag is None:
            return True
        guard = self.guard
        was_held, since = guard.held, guard.held_since
        is_open = guard.update(
            self.lag.current, waiting, self.handshakes(), self.best_rate, now, self.answer_wait()
        )
        if guard.held and not was_held:
            self._refused_this_hold = 0
            self.warn.warning(
                "held",
                "Overloaded: the loop is %.2f s behind on the agents it holds (%.2f s more than the "
                "handshakes explain; the manager's oldest admission answer waited %.2f s): no new "
                "connections until it has caught up (%.1f s under %.1f s); they wait in the accept queue, "
                "and are refused after %.0f s held",
                self.lag.current,
                guard.unexplained,
                self.answer_wait(),
                guard.resume_after,
                guard.resume_lag,
                guard.refuse_after,
            )
        elif (
            was_held and not guard.held and since is not None and now - self._caught_up_at >= REPORT_INTERVAL
        ):
            self._caught_up_at = now  # at most every REPORT_INTERVAL, as the "paced" lines
            log.info(
                "Caught up: taking new connections again after %.1f s held (%d refused meanwhile)",
                now - since,
                self._refused_this_hold,
            )
        return is_open

    def _report(self, now: float) -> None:
        self._reported_at = now
        log.info(
            "Overloaded: new connections paced (loop %.2f s behind, %d waiting for their startup's answer, "
            "budget %d from %.0f handshakes/s at best; %d accepted and %d refused so far; held back %d times%s)",
            self.lag.current if self.lag is not None else 0.0,
            self.waiting(),
            self.budget,
            self.best_rate,
            self.accepted,
            self.shed + self.refused_held,
            self._held_back,
            "; none taken while the loop is behind on the agents it holds" if self.guard.held else "",
        )
        self._held_back = 0

    def queued(self) -> int:
        """Connections in the kernel's accept queue (0 when the kernel does not say)."""
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        except OSError:
            return 0
        return int(struct.unpack_from("I", info, TCPI_UNACKED)[0]) if len(info) >= TCPI_UNACKED + 4 else 0

    def _shed(self, now: float) -> None:
        """Refuse the oldest queued connections beyond SHED_WAIT seconds of work at the measured rate, or
        every queued one while the lag guard has held the listener past its `refuse_after`."""
        if now - self._shed_at < CONTROL_TICK:
            return
        if self.guard.refusing(now):
            self._shed_at = now
            count = self._refuse_queued(SHED_BATCH)
            if count:
                self.refused_held += count
                self._refused_this_hold += count
                self.warn.warning(
                    "refused-held",
                    "Overloaded: refused %d new connections at once (the loop is behind on the agents it "
                    "holds, held %.0f s); they retry after their retry_interval",
                    count,
                    now - (self.guard.held_since or now),
                )
            return
        if self.best_rate <= 0 or self._busy_windows < SHED_AFTER:
            return
        self._shed_at = now
        excess = self.queued() - int(self.best_rate * SHED_WAIT)
        count = self._refuse_queued(min(excess, SHED_BATCH))
        if count:
            self.shed += count
            self.warn.warning(
                "shed",
                "Overloaded: refused %d new connections at once (more than %.0f s of handshakes queued at "
                "%.0f/s); they retry after their retry_interval",
                count,
                SHED_WAIT,
                self.best_rate,
            )

    def _refuse_queued(self, limit: int) -> int:
        """Accept and close at most `limit` queued connections, cleanly; how many there were."""
        count = 0
        while count < limit:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            with contextlib.suppress(OSError):
                conn.setblocking(False)
                conn.recv(65536)  # what it sent, so that the close is a FIN, not a reset
            conn.close()
            count += 1
        return count

    def _readable(self) -> None:
        self._shed(self.monotonic())
        room = self._room()
        if room <= 0:
            self.paused_times += 1
            self._pause()
            self._look_later()
            return
        loop = asyncio.get_running_loop()
        for _ in range(room):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and the like: say so, and look again a little later
                self.warn.warning(f"accept:{error.errno}", "Cannot accept a connection: %s", error)
                self._pause()
                self._look_later()
                return
            self.accepted += 1
            conn.setblocking(False)
            task: asyncio.Task[object] = loop.create_task(self._attach(loop, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _attach(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> object:
        try:
            return await loop.connect_accepted_socket(self.factory, sock=conn)
        except OSError:  # gone before it was set up
            with contextlib.suppress(OSError):
                conn.close()
            return None

    def _look_later(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(CONTROL_TICK, self._look)

    def _look(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._shed(self.monotonic())
        if self._room() > 0:
            self._resume()
        else:
            self._look_later()

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(ValueError, OSError):  # already closed
                asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def _resume(self) -> None:
        if not self._reading and not self._closed:
            self._reading = True
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)


def listening_socket(
    host: str, port: int, backlog: int, *, reuse_port: bool, defer_accept: float = 0.0
) -> socket.socket:
    """A non-blocking TCP listening socket (dual-stack on '::'), as `loop.create_server` would bind it.

    With `defer_accept` (seconds, Linux) the kernel queues a connection for accept only once its first
    bytes arrive, or after that wait: an agent always speaks first, so `frame_timeout` runs from the
    moment it spoke. A startup can come seconds after the TCP connect: a loaded agent host (a 200,000-agent
    restart storm's simulator: 225,621 connections accepted empty and closed by frame_timeout, none once
    deferred and the simulator prompt, bench/RESULTS.md), or a full accept queue that dropped the
    handshake's last ACK and the startup, the connection then completed by a bare ACK while the startup's
    retransmission has backed off. One that sends nothing waits in the kernel, not here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if defer_accept > 0 and hasattr(socket, "TCP_DEFER_ACCEPT"):
            seconds = math.ceil(min(defer_accept, DEFER_ACCEPT_MAX))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, seconds)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
