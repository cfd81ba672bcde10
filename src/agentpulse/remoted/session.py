"""One TCP connection: bytes in, frames to the dispatcher, replies out, and why it closed. No task per connection.

The session only frames, guards and writes; what a message means is decided by `Remoted.handle()`, and
which agent the connection carries is kept by `Bindings`, not here. Any exception while handling a frame
closes this connection alone (a WireError is a refusal, anything else a fault). Every close has a
`CloseReason`: it alone decides whether the agent lost its connection (grace). Until the connection
authenticates it may buffer only a small frame and queue only a small reply (`remoted/admission.py`).
"""

from __future__ import annotations

import array
import asyncio
import enum
import fcntl
import termios
from collections.abc import Callable
from typing import Protocol, cast

from agentpulse.wire.errors import WireError
from agentpulse.wire.frames import LENGTH, FrameDecoder
from agentpulse.wire.secure import OS_MAXSTR

SEND_BUFFER_SIZE = 131072  # remoted.send_buffer_size: replies beyond this for one socket are dropped
# Before authentication the only reply is #pong: a peer that sends pings and never reads holds this much.
UNAUTHENTICATED_SEND_BUFFER = 1024
UdpPeer = tuple[str, int]  # (host, port) as the datagram came from


class CloseReason(enum.Enum):
    """Why a connection closed. Only a loss the agent did not ask for starts its connection grace."""

    PEER_CLOSED = "peer closed"  # the agent (or the network) closed it: after a shutdown, a crash, a drop
    REFUSED = "refused"  # it sent something we refused (WireError)
    OVERTAKEN = "overtaken"  # a new connection of the same agent took its key (connection_overtake_time)
    KEY_REMOVED = "key removed"  # its client.keys line was removed or changed
    TIMEOUT = "timeout"  # silent for the manager keep-alive timeout: the timeout is the status change
    MANAGER_STOPPING = "manager stopping"  # the next start resets every live agent (code 5)
    FRAME_TIMEOUT = "frame timeout"  # not authenticated, or a frame begun not finished, within frame_timeout
    LIMIT = "connection limit"  # unauthenticated, closed or refused to keep a connection cap
    # Several nodes: this node lost its cluster lease; its agents fail over (grace, then the other nodes'
    # bindings decide: docs/cluster.md)
    LEASE_LOST = "lease lost"

    @property
    def aborts(self) -> bool:
        """True: drop what is still queued for the peer and close at once (it is hostile or stuck, and
        a peer that never reads would otherwise keep the socket open until its queue drains)."""
        return self in _ABORTED

    @property
    def loses_connection(self) -> bool:
        """True: the agent lost its connection (grace, then code 6). False: it was let go on purpose,
        and whoever let it go reported the status change, if any."""
        return self in _CONNECTION_LOST


_CONNECTION_LOST = frozenset(
    {
        CloseReason.PEER_CLOSED,
        CloseReason.REFUSED,
        CloseReason.FRAME_TIMEOUT,
        CloseReason.LIMIT,
        CloseReason.LEASE_LOST,
    }
)
_ABORTED = frozenset({CloseReason.FRAME_TIMEOUT, CloseReason.LIMIT})


def unread_bytes(session: Session) -> int:
    """Bytes the kernel holds for this connection that the loop has not read yet (0 when unknown): when
    there are some, a silence is the manager's (its loop is behind), not the agent's."""
    transport = session.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        count = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    except (OSError, ValueError):
        return 0
    return count[0]


def normalize_ip(host: str) -> str:
    """An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d; client.keys names it a.b.c.d."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


class Dispatcher(Protocol):
    """What sessions and the UDP endpoint call: `Remoted`, which decides what a message means."""

    monotonic: Callable[[], float]

    def handle(
        self, data: bytes, peer_ip: str, session: Session | None, udp_peer: UdpPeer | None = None
    ) -> None: ...

    def refused(self, error: WireError, peer_ip: str, session: Session | None) -> None: ...

    def failed(self, error: Exception, peer_ip: str, session: Session | None) -> None: ...

    def frame_begun(self, session: Session) -> None: ...

    def session_opened(self, session: Session) -> None: ...

    def session_closed(self, session: Session) -> None: ...


class Session(asyncio.Protocol):
    __slots__ = (
        "admitted",
        "authenticated",
        "close_reason",
        "decoder",
        "dispatcher",
        "draining",
        "frame_started",
        "held",
        "ip_counted",
        "last_received",
        "opened_at",
        "peer_ip",
        "pings",
        "probed_at",
        "transport",
        "waiting",
        "watched",
    )

    def __init__(self, dispatcher: Dispatcher, first_frame_max: int = OS_MAXSTR) -> None:
        self.dispatcher = dispatcher
        self.decoder = FrameDecoder(first_frame_max)  # raised to OS_MAXSTR once authenticated
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.last_received = 0.0  # monotonic
        self.close_reason: CloseReason | None = None  # None while open
        self.probed_at = -1.0  # monotonic time of the last manager keep-alive probe
        self.opened_at = 0.0  # monotonic
        self.frame_started = -1.0  # monotonic time the frame now buffered began; -1 when none is
        self.authenticated = False  # a message on it opened with an agent's key
        self.pings = 0  # answered before authentication (`Admission.ping`)
        self.admitted = False  # counted by the admission limits (until it closes)
        self.ip_counted = False  # counted toward its address's cap (unauthenticated for a while)
        self.watched = False  # has its entry in the admission deadlines
        # Paused (a replay verdict pending, `hold()`, or agent events back-pressure): frames read, not handled.
        self.held: list[bytes] | None = None
        self.waiting = False  # a replay verdict is pending: only `resume()` goes on
        self.draining = False  # closing: what is held is being handled, and nothing pauses it again

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = normalize_ip(peer[0]) if peer else ""
        self.last_received = self.opened_at = self.dispatcher.monotonic()
        self.dispatcher.session_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.close_reason is not None:
            return
        now = self.last_received = self.dispatcher.monotonic()
        decoder = self.decoder
        try:
            frames = decoder.feed(data)
        except WireError as error:
            self.dispatcher.refused(error, self.peer_ip, self)
            self.close(CloseReason.REFUSED)
            return
        if self.held is not None:  # paused while this read was under way: handled on resume
            self.held.extend(frames)
        elif not self._dispatch(frames):
            return
        if decoder.buffered:  # a frame begun: it must end within frame_timeout (a keep-alive rarely splits)
            if frames or self.frame_started < 0:
                self.frame_started = now
                if not self.watched:
                    self.dispatcher.frame_begun(self)
        elif self.frame_started >= 0:
            self.frame_started = -1.0

    def _dispatch(self, frames: list[bytes]) -> bool:
        """Handle frames in order; False when the session closed. A pause stops it: the rest are held."""
        try:
            for index, frame in enumerate(frames):
                self.dispatcher.handle(frame, self.peer_ip, self)
                if self.close_reason is not None:
                    return False
                if self.held is not None:
                    self.held.extend(frames[index + 1 :])
                    return True
        except WireError as error:
            self.dispatcher.refused(error, self.peer_ip, self)
            self.close(CloseReason.REFUSED)
            return False
        except Exception as error:  # the frame boundary: one line (FaultLog), not the loop's traceback
            self.dispatcher.failed(error, self.peer_ip, self)
            self.close(CloseReason.REFUSED)
            return False
        return True

    def hold(self) -> None:
        """The replay verdict on the frame just handled is pending (`arrival.py`): the frames after it wait,
        whatever the events back-pressure does meanwhile, until `resume()`."""
        self.waiting = True
        self.pause_reading()

    def resume(self) -> None:
        """The verdict came: handle what was held, and read again unless something else paused it."""
        self.waiting = False
        self.resume_reading()

    def pause_reading(self) -> None:
        """Stop reading (agent events back-pressure); frames already read wait in `held`, in memory."""
        if (
            self.held is None
            and not self.draining
            and self.transport is not None
            and self.close_reason is None
        ):
            self.held = []
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Handle what was held, then read again (unless that paused it anew)."""
        if self.waiting:  # a replay verdict is pending: `resume()` goes on
            return
        held, self.held = self.held, None
        if held is None or self.close_reason is not None or self.transport is None:
            return
        if self._dispatch(held) and self.held is None:
            self.transport.resume_reading()

    def send(self, payload: bytes) -> bool:
        transport = self.transport
        if self.close_reason is not None or transport is None:
            return False
        limit = SEND_BUFFER_SIZE if self.authenticated else UNAUTHENTICATED_SEND_BUFFER
        if transport.get_write_buffer_size() > limit:
            return False
        transport.write(LENGTH.pack(len(payload)) + payload)
        return True

    def send_frames(self, payloads: list[bytes]) -> bool:
        """Several sealed messages in one write (a shared-file push): one system call, not one each."""
        transport = self.transport
        if self.close_reason is not None or transport is None or not self.authenticated:
            return False
        if transport.get_write_buffer_size() > SEND_BUFFER_SIZE:
            return False
        transport.write(b"".join(LENGTH.pack(len(payload)) + payload for payload in payloads))
        return True

    def close(self, reason: CloseReason) -> None:
        """Close the connection; the first reason given is the one that counts."""
        if self.close_reason is None and reason is CloseReason.MANAGER_STOPPING:
            # Not for the other reasons: an overtaken connection's frames would rebind the agent to it, a
            # removed key's or a refused connection's are not to be trusted, a lost lease hands them over.
            self._handle_held()
        if self.close_reason is None:
            self.close_reason = reason
            # Timer heaps keep a closed session until its entry comes up: not the bytes it buffered.
            self.decoder.clear()
            self.held = None
            if self.transport is not None:
                if reason.aborts:
                    self.transport.abort()
                else:
                    self.transport.close()

    def _handle_held(self) -> None:
        """Frames read but held by a pause are the agent's, sent and gone from its buffer: handled before
        the connection goes (at most what one pause held), unless a replay verdict is pending for them."""
        if not self.held or self.waiting:
            return
        self.draining = True
        held, self.held = self.held, None
        self._dispatch(held)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_reason is None and self.held:
            self.transport = None  # gone: replies to what was held are not written
            self._handle_held()
        if self.close_reason is None:
            self.close_reason = CloseReason.PEER_CLOSED
            self.decoder.clear()
        self.dispatcher.session_closed(self)


class UdpEndpoint(asyncio.DatagramProtocol):
    """UDP: one datagram is one payload; there is no session, replies go to the saved peer.

    With several workers each has one of these on the shared port (SO_REUSEPORT): Linux picks the socket
    by a hash of the datagram's 4-tuple, so an agent (one source address and port) keeps reaching the
    worker that holds its reply peer and counters. When a worker dies and is replaced the group changes
    and some agents move to another worker: like a TCP agent reconnecting there, its first datagram
    (every one carries the agent id) rebuilds that state.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host = normalize_ip(str(addr[0]))
        try:
            self.dispatcher.handle(data, host, None, (str(addr[0]), int(addr[1])))
        except WireError as error:
            self.dispatcher.refused(error, host, None)
        except Exception as error:  # the datagram boundary, as in Session.data_received
            self.dispatcher.failed(error, host, None)

    def send(self, payload: bytes, addr: UdpPeer) -> None:
        if self.transport is not None:
            self.transport.sendto(payload, addr)
