"""Before authentication: which connections a remoted process keeps, and how long a frame may take.

A connection is unauthenticated until a message on it opens with an agent's key. The danger is that
anyone can open thousands, send nothing or a byte at a time, and hold memory and file descriptors. So
unauthenticated connections are capped in total and, once they have waited `COUNTED_AFTER` (an agent
sends its startup at once, so a burst behind one NAT never counts), per source address, whose excess
is refused at once; all connections are capped under the open-file limit (the oldest unauthenticated
go first), and each must authenticate within `frame_timeout`; after that, any frame begun must end
within the same time. A connection whose first message proved its key and waits for the manager's replay
verdict (`Session.waiting`, worker processes) is the manager's delay, not the peer's: it gets the
question's own time (`ADMIT_TIMEOUT`) on top (a restart storm over 3 nodes of 2 workers closed ~12,900
such connections per node as frame timeouts, bench/RESULTS.md); so does one whose first bytes wait
unread in the kernel at its deadline (this loop is behind). Checks on connect are O(1); the deadlines
live in one heap, one sweep visits it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import resource
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from agentpulse.config import RemoteConfig
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.remoted.replay import ADMIT_TIMEOUT
from agentpulse.remoted.session import CloseReason, Session, unread_bytes
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.secure import OS_MAXSTR

log = logging.getLogger(__name__)

RESERVED_FILES_SHARE = 10  # auto max_connections leaves a tenth of the open-file limit ...
RESERVED_FILES_MIN = 64  # ... and at least this many, for global.db, the pipes, NATS and the logs
# A ping costs the sender nothing and the server a reply: a connection may send this many before it
# authenticates (a health check needs one), then it is refused.
MAX_UNAUTHENTICATED_PINGS = 8
COUNTED_AFTER = 1.0  # seconds unauthenticated before a connection counts toward its address's cap
# (half of frame_timeout when that is shorter, so that connections count before their deadline)
SWEEP_MAX = 1.0  # seconds between two sweeps at most (a tenth of frame_timeout when that is shorter)
SWEEP_MIN = 0.05


def auto_connection_cap() -> int:
    """The open-file limit of this process less its reserve; 0 (no cap) when the limit is infinite."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(1, soft - max(RESERVED_FILES_MIN, soft // RESERVED_FILES_SHARE))


class Admission:
    def __init__(
        self,
        remote: RemoteConfig,
        who: Callable[[Session], str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.frame_timeout = remote.frame_timeout
        self.per_ip_cap = remote.max_unauthenticated_per_ip
        self.unauthenticated_cap = remote.max_unauthenticated
        self.connection_cap = remote.max_connections or auto_connection_cap()  # 0: none
        self.first_frame_max = remote.max_unauthenticated_frame
        self.tick = min(SWEEP_MAX, max(SWEEP_MIN, self.frame_timeout / 10))
        self.counted_after = min(COUNTED_AFTER, self.frame_timeout / 2)
        self.who = who
        self.monotonic = monotonic
        self.warn = RateLimitedLog(log, monotonic=monotonic)
        self.connections = 0  # admitted and not yet released
        self._unauthenticated: OrderedDict[Session, None] = OrderedDict()  # oldest first
        self._per_ip: dict[str, int] = {}  # per source address: unauthenticated for over counted_after
        self._young: deque[Session] = deque()  # admitted, in order, until counted_after has passed
        self._deadlines: list[tuple[float, int, Session]] = []  # at most one entry per session
        self._order = itertools.count()
        self.refused = 0  # refused at connect (per-address cap, or every connection authenticated)
        self.evicted = 0  # oldest unauthenticated closed to make room
        self.timed_out = 0  # closed by frame_timeout
        self.handshakes = 0  # connections that authenticated (the acceptor's measure of what we serve)
        # Seconds this loop is behind (LoopLag.allowance): a startup it has not read yet is not the
        # peer's slowness, so the deadlines and the per-address count run that much later.
        self.allowance: Callable[[], float] = lambda: 0.0

    @property
    def unauthenticated(self) -> int:
        return len(self._unauthenticated)

    def in_flight(self, window: float) -> int:
        """Unauthenticated connections opened within the last `window` seconds (stretched by the loop's
        lag): the handshakes the listener paces. Older ones are idle or hostile (an agent sends its startup
        at once), cost no work, and their deadlines close them; counting them would let a few hundred idle
        connections hold the listener shut until their frame_timeout."""
        since = self.monotonic() - window - self.allowance()
        count = 0
        for session in reversed(self._unauthenticated):  # newest first: opened in order
            if session.opened_at < since:
                break
            count += 1
        return count

    def evictable(self, limit: int) -> int:
        """How many of the oldest unauthenticated connections (at most `limit`, oldest first, stopping at
        the first that is not) have waited `counted_after` with nothing unread: not a startup this loop
        owes an answer to, so at the total cap the listener may take as many, each closing one of them."""
        now = self.monotonic() - self.allowance()
        count = 0
        for session in self._unauthenticated:
            if count >= limit or session.opened_at + self.counted_after > now or unread_bytes(session):
                break
            count += 1
        return count

    # -- connect, authenticate, close ---------------------------------------------------------------------

    def admit(self, session: Session) -> bool:
        """A new connection: counted and given its deadline, or refused (closed) when a cap says so."""
        ip = session.peer_ip
        waiting = self._per_ip.get(ip, 0)
        if waiting >= self.per_ip_cap:
            return self._refuse(
                session,
                "per_ip",
                f"{waiting} connections from that address unauthenticated for over {self.counted_after:g} s "
                "(max_unauthenticated_per_ip)",
            )
        if len(self._unauthenticated) >= self.unauthenticated_cap:
            self._evict_oldest("max_unauthenticated", self.unauthenticated_cap)
        if self.connection_cap and self.connections >= self.connection_cap:
            if not self._unauthenticated:
                return self._refuse(
                    session,
                    "connections",
                    f"{self.connections} connections, all authenticated (max_connections)",
                )
            self._evict_oldest("max_connections", self.connection_cap)
        self.connections += 1
        session.admitted = True
        self._unauthenticated[session] = None
        self._young.append(session)
        self._watch(session, session.opened_at + self.frame_timeout)
        return True

    def authenticated(self, session: Session) -> None:
        """Its first message opened with an agent's key: full-size frames, and no longer counted as waiting."""
        session.authenticated = True
        self.handshakes += 1
        session.decoder.max_size = OS_MAXSTR
        self._stop_waiting(session)

    def ping(self, session: Session) -> None:
        """A ping on a connection not yet authenticated. Raises WireError(TOO_MANY_PINGS) past the cap."""
        session.pings += 1
        if session.pings > MAX_UNAUTHENTICATED_PINGS:
            raise WireError(Reason.TOO_MANY_PINGS, f"more than {MAX_UNAUTHENTICATED_PINGS}")

    def closed(self, session: Session) -> None:
        """The connection is gone (whoever closed it); its heap entry goes at its next visit."""
        if session.admitted:
            session.admitted = False
            self.connections -= 1
        self._stop_waiting(session)

    def _stop_waiting(self, session: Session) -> None:
        if session in self._unauthenticated:
            del self._unauthenticated[session]
            self._uncount(session)

    def _count(self, now: float) -> None:
        """Connections unauthenticated for `counted_after` start counting toward their address's cap,
        unless what they sent waits unread in the kernel (this loop is behind, not the peer): those are
        looked at again at the next sweep."""
        young, waiting = self._young, self._unauthenticated
        behind: list[Session] = []
        while young and young[0].opened_at + self.counted_after <= now:
            session = young.popleft()
            if session not in waiting:
                continue
            if unread_bytes(session):
                behind.append(session)
                continue
            session.ip_counted = True
            self._per_ip[session.peer_ip] = self._per_ip.get(session.peer_ip, 0) + 1
        young.extendleft(reversed(behind))  # oldest first again

    def _uncount(self, session: Session) -> None:
        if not session.ip_counted:
            return
        session.ip_counted = False
        ip = session.peer_ip
        left = self._per_ip[ip] - 1
        if left:
            self._per_ip[ip] = left
        else:
            del self._per_ip[ip]

    def _refuse(self, session: Session, kind: str, why: str) -> bool:
        self.refused += 1
        self.warn.warning(f"limit:{kind}", "Connection from '%s' refused: %s", session.peer_ip, why)
        session.close(CloseReason.LIMIT)
        return False

    def _evict_oldest(self, option: str, cap: int) -> None:
        oldest, _ = self._unauthenticated.popitem(last=False)
        self._uncount(oldest)  # out of the waiting list already: closed() below only releases it
        self.evicted += 1
        age = self.monotonic() - oldest.opened_at
        self.warn.warning(
            f"limit:{option}",
            "Closed the oldest unauthenticated connection (from '%s', open %.1f s): %s %d reached",
            oldest.peer_ip,
            age,
            option,
            cap,
        )
        self.closed(oldest)  # released now: its connection_lost comes on a later turn of the loop
        oldest.close(CloseReason.LIMIT)

    # -- deadlines ----------------------------------------------------------------------------------------

    def frame_begun(self, session: Session) -> None:
        """A frame began on a session without a heap entry (`Session.data_received` checks `watched`)."""
        self._watch(session, session.frame_started + self.frame_timeout)

    def _watch(self, session: Session, deadline: float) -> None:
        session.watched = True
        heapq.heappush(self._deadlines, (deadline, next(self._order), session))

    def deadline(self, session: Session) -> float | None:
        """When this session must have authenticated, or finished the frame it began; None: no deadline."""
        if not session.authenticated:
            return session.opened_at + self.frame_timeout + (ADMIT_TIMEOUT if session.waiting else 0.0)
        if session.frame_started >= 0:
            return session.frame_started + self.frame_timeout
        return None

    def sweep(self, now: float) -> None:
        """Close every session past its deadline. An entry is only a hint: the session's own state
        decides, so a frame that ended (or a connection that authenticated) costs nothing until here."""
        self._count(now)
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, order, session = heapq.heappop(heap)
            deadline = None if session.closed else self.deadline(session)
            if deadline is None:
                session.watched = False
            elif deadline > now:
                heapq.heappush(heap, (deadline, order, session))
            elif not session.authenticated and not session.waiting and unread_bytes(session):
                # What it sent waits unread in the kernel: this loop is behind, not the peer. Looked at
                # again at the next sweep (once read, the frame's own rules apply).
                heapq.heappush(heap, (now + self.tick, order, session))
            else:
                session.watched = False
                self._expire(session, now)

    def _expire(self, session: Session, now: float) -> None:
        self.timed_out += 1
        buffered = session.decoder.buffered
        if session.authenticated:
            kind, what = (
                "frame",
                f"a frame begun {now - session.frame_started:.1f} s ago has only {buffered} bytes",
            )
        else:
            kind, what = "auth", f"no authenticated message {now - session.opened_at:.1f} s after connecting"
            if buffered:
                kind, what = "auth:partial", f"{what}, {buffered} bytes of a frame buffered"
        self.warn.warning(
            f"deadline:{kind}",
            "Connection from %s closed: %s (frame_timeout %g s)",
            self.who(session),
            what,
            self.frame_timeout,
        )
        session.close(CloseReason.FRAME_TIMEOUT)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.sweep(self.monotonic() - self.allowance())

    def __len__(self) -> int:
        return len(self._deadlines)
