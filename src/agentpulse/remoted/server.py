"""remoted: the listeners, and what each authenticated message means (the Wazuh 4.x protocol, docs/protocol.md).

`Remoted` is the dispatcher. `handle()` is the hot path: authenticate (against the `KeyStore` it is given),
decrypt, classify, bind (`Bindings`), answer, and hand one record to the store. It does no I/O besides
writing the reply, and no logging unless something is wrong. Connections are admitted, and timed until
they authenticate, by `Admission`; exceptions at the frame boundary go to one `FaultLog`. A message on a
connection that is not its agent's current one first passes the replay rule (`arrival.py`, `replay.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator

from agentpulse.config import Config
from agentpulse.looplag import LoopLag
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.records import RecordSink, StatusUpdate
from agentpulse.remoted.acceptor import HANDSHAKE_TARGET, Acceptor, listening_socket
from agentpulse.remoted.admission import Admission
from agentpulse.remoted.arrival import Arrival, Arrivals
from agentpulse.remoted.bindings import Bindings
from agentpulse.remoted.faults import FaultLog
from agentpulse.remoted.grace import GraceEvents
from agentpulse.remoted.intake import EventIntake
from agentpulse.remoted.journal import AckJournal
from agentpulse.remoted.keystore import AgentEntry, Departures, KeyStore
from agentpulse.remoted.outbound import Outbound
from agentpulse.remoted.replay import LocalReplayGuard, ReplayGuard
from agentpulse.remoted.session import CloseReason, Session, UdpEndpoint, UdpPeer
from agentpulse.remoted.stats import PING_KIND, RemotedStats, WorkerStats, snapshot
from agentpulse.status import StatusCode, Trigger
from agentpulse.wire import boundedjson, control
from agentpulse.wire.counters import SEQUENCE_LOCAL
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.secure import split_header

log = logging.getLogger(__name__)

MANAGER_VERSION = "v4.14.7"  # the Wazuh version agentpulse answers as, for the startup version check
PING, PONG = b"#ping", b"#pong"
LISTEN_BACKLOG = 4096
# At a stop, connections get this long to send what is queued for them (an agent that does not read
# never lets its write buffer drain); the rest are aborted, so a stop never waits on a peer.
STOP_GRACE = 2.0


@contextlib.contextmanager
def _naming(host: str, port: int, protocol: str) -> Iterator[None]:
    """A bind error says which address, in one line an operator can act on."""
    try:
        yield
    except OSError as error:
        cause: BaseException | None = error  # uvloop's UDP bind error hides the errno in its cause
        while isinstance(cause, OSError) and not cause.errno:
            cause = cause.__cause__
        errno = cause.errno if isinstance(cause, OSError) else None
        reason = os.strerror(errno) if errno else str(error)
        raise OSError(errno, f"cannot listen on {host}:{port}/{protocol}: {reason}") from error


def disconnect_gone(change: Departures, store: RecordSink, now: float) -> None:
    """Agents gone from client.keys are disconnected (their connections, if any, were let go)."""
    for key in change.gone:
        store.submit(StatusUpdate(key.number, Trigger.CONNECTION_LOST, now))


class Remoted:
    def __init__(
        self,
        config: Config,
        keys: KeyStore,
        store: RecordSink,
        grace: GraceEvents,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        manager_version: str = MANAGER_VERSION,
        journal: AckJournal | None = None,
        lag: LoopLag | None = None,
        intake: EventIntake | None = None,
        replay: ReplayGuard | None = None,
    ) -> None:
        self.config = config
        self.lag = lag  # this loop's lag: the acceptor takes fewer connections while it lags
        self.intake = intake  # agent events out (remoted/intake.py); None: they are only counted
        if intake is not None:
            intake.monotonic = monotonic  # its loop budget is measured on the sessions' clock
        self.journal = journal  # written before an ack the store has not committed yet
        self.remote = config.remote
        self.store = store
        self.clock = clock
        self.monotonic = monotonic
        self.manager_version = manager_version
        self.keys = keys
        self.bindings = Bindings(grace, config.remote.connection_overtake_time, monotonic)
        self.replay = replay or LocalReplayGuard(config.remote.verify_msg_id)
        self.arrivals = Arrivals(self, self.replay)
        self.sessions: set[Session] = set()
        self.servers: list[Acceptor] = []
        self.udp_transport: asyncio.DatagramTransport | None = None
        self.addresses: list[tuple[str, int, str]] = []  # (host, port, protocol) actually bound
        self.warn = RateLimitedLog(log)
        self.admission = Admission(config.remote, self.describe, monotonic)
        if lag is not None:
            self.admission.allowance = lag.allowance
        self.faults = FaultLog(log, monotonic)
        self.stats = RemotedStats()  # messages, refusals, dropped replies: read by `stats_snapshot()`
        self.outbound = Outbound(keys, self.bindings, self.stats)
        self._admission_sweep: asyncio.Task[None] | None = None
        self._events_tick: asyncio.Task[None] | None = None
        self._event_counts: dict[int, int] = {}
        self.stopping = False
        # Several nodes: this node lost its lease, so it takes no agent until it registers again
        self.paused = False
        self.on_session_opened: list[Callable[[Session], None]] = []

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listeners. With several workers every one binds the same port (SO_REUSEPORT), the
        datagram socket too: the kernel then picks a worker by hashing the 4-tuple, so one agent's
        datagrams keep reaching the same worker while the set of workers is stable (see `UdpEndpoint`).
        Raises OSError naming the address when a port cannot be bound."""
        loop = asyncio.get_running_loop()
        if self.intake is not None:  # what the last run spooled goes out first; no agent waits on it
            await self.intake.start()
            self._events_tick = asyncio.create_task(self._tick_events(), name="agent-events-tick")
        host = self.remote.local_ip or ("::" if self.remote.ipv6 else "0.0.0.0")
        shared = self.remote.worker_processes > 1
        if "tcp" in self.remote.protocols:
            first_frame_max = self.admission.first_frame_max
            with _naming(host, self.remote.port, "tcp"):
                sock = listening_socket(
                    host,
                    self.remote.port,
                    LISTEN_BACKLOG,
                    reuse_port=shared,
                    defer_accept=self.remote.frame_timeout,  # a connection is the peer's once it speaks
                )
            admission = self.admission
            server = Acceptor(
                sock,
                lambda: Session(self, first_frame_max),
                waiting=lambda: admission.in_flight(HANDSHAKE_TARGET),
                handshakes=lambda: admission.handshakes,
                evictable=admission.evictable,
                lag=self.lag,
                answer_wait=self.replay.unanswered_for,
                budget_max=admission.unauthenticated_cap,
                monotonic=self.monotonic,
            )
            server.start()
            self.servers.append(server)
            name = sock.getsockname()
            self.addresses.append((name[0], name[1], "tcp"))
            self._admission_sweep = asyncio.create_task(self.admission.run(), name="admission-sweep")
        if "udp" in self.remote.protocols:
            udp_port = self.addresses[0][1] if self.addresses else self.remote.port
            with _naming(host, udp_port, "udp"):
                transport, endpoint = await loop.create_datagram_endpoint(
                    lambda: UdpEndpoint(self), local_addr=(host, udp_port), reuse_port=shared
                )
            self.outbound.udp, self.udp_transport = endpoint, transport
            name = transport.get_extra_info("sockname")
            self.addresses.append((name[0], name[1], "udp"))
        for host_, port, protocol in self.addresses:
            log.info("Listening on %s:%d/%s", host_, port, protocol)

    async def stop(self) -> None:
        self.stopping = True
        if self._admission_sweep is not None:
            self._admission_sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._admission_sweep
        for server in self.servers:
            server.close()
        for session in list(self.sessions):
            session.close(CloseReason.MANAGER_STOPPING)
        if self.udp_transport is not None:
            self.udp_transport.close()
        for server in self.servers:
            await server.wait_closed()
        for session in list(self.sessions):  # set up while the listener closed
            session.close(CloseReason.MANAGER_STOPPING)
        await self._sessions_gone(STOP_GRACE)
        if self.sessions:
            log.info(
                "Stopping: %d connections did not drain in %g s; aborted", len(self.sessions), STOP_GRACE
            )
            for session in list(self.sessions):
                if session.transport is not None:
                    session.transport.abort()
            await self._sessions_gone(STOP_GRACE)
        self.flush_event_counts()
        if self._events_tick is not None:
            self._events_tick.cancel()
        if self.intake is not None:
            await self.intake.stop()

    async def _sessions_gone(self, timeout: float) -> None:
        """Until every session's connection_lost ran (its unbinding is sent before the pipe closes)."""
        deadline = time.monotonic() + timeout  # real time, whatever clock the tests inject
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    @property
    def tcp_port(self) -> int:
        return next(port for _, port, protocol in self.addresses if protocol == "tcp")

    @property
    def port(self) -> int:
        """The port listened on (TCP and UDP share it); 0 before `start()`."""
        return self.addresses[0][1] if self.addresses else 0

    # -- keys ---------------------------------------------------------------------------------------------

    def keys_changed(self, change: Departures) -> None:
        """The key store took a new client.keys: connections on old credentials go, agents gone from
        the file are disconnected. New agents are accepted from now on."""
        for entry in change.dropped:
            self.bindings.drop(entry.number)
        disconnect_gone(change, self.store, self.clock())

    # -- the hot path -------------------------------------------------------------------------------------

    def handle(
        self,
        data: bytes,
        peer_ip: str,
        session: Session | None,
        udp_peer: UdpPeer | None = None,
    ) -> None:
        """One frame (TCP) or datagram (UDP). Raises WireError for anything refused."""
        if data == PING:
            self.stats.messages[PING_KIND] += 1
            if session is not None and not session.authenticated:
                self.admission.ping(session)
            self.outbound.send_plain(PONG, session, udp_peer)
            return
        envelope = split_header(data)
        entry = self.keys.find(envelope.agent_id, peer_ip)
        number = entry.number
        if session is not None:
            bound = self.bindings.agent_of(session)
            if bound is not None and bound != number:
                raise WireError(
                    Reason.AGENT_MISMATCH, f"connection of agent {self._id_text(bound)} sent as another agent"
                )
            current = bound is not None
        else:
            current = udp_peer is not None and self.bindings.udp_peer_of(number) == udp_peer
        message = entry.cipher.open(envelope)
        seq = message.global_counter * SEQUENCE_LOCAL + message.local_counter
        if current:
            if self.remote.verify_msg_id:
                entry.received.accept_strict(seq)
            elif session is None:
                entry.received.accept_window(seq)  # anyone can send a datagram from the agent's address
            else:
                entry.received.note(seq)
            entry.reply_cipher = envelope.cipher
        payload = message.payload
        parsed: control.FromAgent
        if payload == entry.last_keepalive_text and entry.last_keepalive is not None:
            parsed = entry.last_keepalive
        else:
            parsed = control.parse_from_agent(payload)
            if isinstance(parsed, control.Keepalive):
                entry.last_keepalive_text, entry.last_keepalive = payload, parsed
        if current:
            self.dispatch(entry, seq, parsed, session, udp_peer)
        else:
            self.arrivals.first(Arrival(entry, seq, parsed, envelope.cipher, session, udp_peer))

    def dispatch(
        self,
        entry: AgentEntry,
        seq: int,
        parsed: control.FromAgent,
        session: Session | None,
        udp_peer: UdpPeer | None,
    ) -> None:
        """What an accepted message means (a refused replay, or one waiting for its verdict, is not counted)."""
        self.stats.messages[type(parsed)] += 1
        now = self.clock()
        number = entry.number
        if isinstance(parsed, control.Keepalive):
            self.bind(entry, session, udp_peer)
            if not entry.journaled and self.journal is not None:
                # A UDP agent goes on with keep-alives across a manager restart, without a startup.
                self.journal.record(number, Trigger.ALIVE, now)
                entry.journaled = True
            self.outbound.reply(entry, control.ACK)
            self.store.submit(StatusUpdate(number, Trigger.ALIVE, now, keepalive=parsed))
        elif isinstance(parsed, control.AgentEvent):
            self._event_counts[number] = self._event_counts.get(number, 0) + 1
            counters = divmod(seq, SEQUENCE_LOCAL)  # (global, local)
            intake = self.intake
            accept = intake is None or intake.accept(
                entry.key, parsed.payload, counters, now, self.monotonic(), session
            )
            if accept:
                self.store.submit(StatusUpdate(number, Trigger.ALIVE, now))
        elif isinstance(parsed, control.Startup):
            self._startup(entry, parsed, session, udp_peer, now)
        elif isinstance(parsed, control.Shutdown):
            self.store.submit(StatusUpdate(number, Trigger.SHUTDOWN, now))
        elif isinstance(parsed, control.RequestReply):
            self._request_reply(entry, parsed, now)
        else:
            self.bind(entry, session, udp_peer)
            self.store.submit(StatusUpdate(number, Trigger.ALIVE, now))

    def counters_to_report(self) -> dict[int, int]:
        """The highest counters of the agents held here that talked since the last call."""
        changed: dict[int, int] = {}
        entries = self.keys.entries
        for agent_id in self.bindings.agents():
            entry = entries.get(agent_id)
            if entry is not None and entry.received.current != entry.reported:
                entry.reported = entry.received.current
                changed[agent_id] = entry.received.highest
        return changed

    def housekeeping(self) -> None:
        """About once a second: event counts to the store, late challenges, counters to the replay guard."""
        self.flush_event_counts()
        self.arrivals.expire_challenges()
        if self.replay.reports:
            self.replay.report(self.counters_to_report())

    def pause(self, paused: bool) -> int:
        """Several nodes: take no agent while this node has no lease (`paused`), and let every connection
        go now (as lost: each agent's grace runs, and the other nodes' bindings decide). How many closed."""
        self.paused = paused
        if not paused:
            return 0
        sessions = list(self.sessions)
        for session in sessions:
            session.close(CloseReason.LEASE_LOST)
        return len(sessions)

    def overtaken(self, agent_id: int) -> None:
        """A connection on another worker took this agent over (its connection here was silent)."""
        session = self.bindings.session_of(agent_id)
        if session is not None:
            log.info("Agent %s: connection overtaken by another worker", self._id_text(agent_id))
            session.close(CloseReason.OVERTAKEN)

    def _startup(
        self,
        entry: AgentEntry,
        startup: control.Startup,
        session: Session | None,
        udp_peer: UdpPeer | None,
        now: float,
    ) -> None:
        refusal = self.version_refusal(startup)
        self.bind(entry, session, udp_peer)
        if refusal is not None:
            code, message = refusal
            self.warn.warning(
                f"version:{entry.number}",
                "Agent %s (%s) refused: %s (version %s)",
                entry.key.id,
                entry.key.name,
                message,
                startup.version,
            )
            self.outbound.reply(entry, control.build_error(message))
            version = f"Wazuh {startup.version}" if code is StatusCode.INVALID_VERSION else None
            self.store.submit(
                StatusUpdate(entry.number, Trigger.VERSION_REFUSED, now, code=code, version=version)
            )
            return
        if self.journal is not None:
            self.journal.record(entry.number, Trigger.STARTUP, now)
            entry.journaled = True
        self.outbound.reply(entry, control.ACK)
        self.store.submit(StatusUpdate(entry.number, Trigger.STARTUP, now))

    def version_refusal(self, startup: control.Startup) -> tuple[StatusCode, str] | None:
        if startup.version_missing:
            return (StatusCode.VERSION_NOT_RECEIVED, control.ERR_NO_VERSION)
        if (
            startup.version is not None
            and not self.remote.allow_higher_versions
            and control.is_newer(startup.version, self.manager_version)
        ):
            return (StatusCode.INVALID_VERSION, control.ERR_NEWER_VERSION)
        return None

    def _request_reply(self, entry: AgentEntry, reply: control.RequestReply, now: float) -> None:
        self.store.submit(StatusUpdate(entry.number, Trigger.ALIVE, now))
        response = reply.response
        if response.startswith("{"):
            try:
                decoded = boundedjson.loads(response)
            except ValueError:
                return
            except WireError as error:
                self.warn.warning(
                    f"state:{error.reason.name}", "Agent %s: request reply ignored: %s", entry.key.id, error
                )
                return
            if isinstance(decoded, dict) and isinstance(decoded.get("data"), dict):
                self.store.record_state(entry.number, json.dumps(decoded["data"])[: control.FIELD_CAP * 4])

    def bind(self, entry: AgentEntry, session: Session | None, udp_peer: UdpPeer | None) -> None:
        """Tie the agent to this TCP session (or UDP peer); raises KEY_IN_USE (see `Bindings.bind`)."""
        if session is None:
            self.bindings.bind_udp(entry.number, udp_peer)
        else:
            self.bindings.bind(entry.number, session, entry.key.id)
            if not session.authenticated:  # proven the agent's (replay rule passed): the pre-auth limits end
                self.admission.authenticated(session)

    def agent_on(self, session: Session) -> AgentEntry | None:
        """The entry of the agent bound to this session, if any."""
        agent_id = self.bindings.agent_of(session)
        return self.keys.entries.get(agent_id) if agent_id is not None else None

    def refused(self, error: WireError, peer_ip: str, session: Session | None) -> None:
        who = self.describe(session) if session is not None else f"'{peer_ip}'"
        self.stats.refusals[error.reason] += 1
        self.warn.warning(f"refused:{error.reason.name}", "Connection from %s refused: %s", who, error)

    def failed(self, error: Exception, peer_ip: str, session: Session | None) -> None:
        """Not a refusal: an exception nobody expected while handling a message (the session closes)."""
        self.faults.record(error, self.describe(session) if session is not None else f"'{peer_ip}'")

    def describe(self, session: Session) -> str:
        """`agent 001` for a session bound to an agent, else its quoted source address, for the log."""
        agent_id = self.bindings.agent_of(session)
        return f"agent {self._id_text(agent_id)}" if agent_id is not None else f"'{session.peer_ip}'"

    def _id_text(self, agent_id: int) -> str:
        """The id as client.keys writes it (`001`), for the log."""
        entry = self.keys.entries.get(agent_id)
        return entry.key.id if entry is not None else f"{agent_id:03d}"

    # -- sessions -----------------------------------------------------------------------------------------

    def session_opened(self, session: Session) -> None:
        if self.paused:
            session.close(CloseReason.LEASE_LOST)
            return
        if not self.admission.admit(session):
            return  # refused and closed at once
        self.sessions.add(session)
        for callback in self.on_session_opened:
            callback(session)

    def frame_begun(self, session: Session) -> None:
        self.admission.frame_begun(session)

    def session_closed(self, session: Session) -> None:
        self.sessions.discard(session)
        self.arrivals.challenges.session_closed(session)
        self.admission.closed(session)
        if self.intake is not None:
            self.intake.closed(session)
        reason = session.close_reason or CloseReason.PEER_CLOSED
        if self.stopping:  # however it closed, it goes with the manager: the next start resets it
            reason = CloseReason.MANAGER_STOPPING
        agent_id = self.bindings.agent_of(session)
        if agent_id is not None:
            entry = self.keys.entries.get(agent_id)
            if entry is not None:  # the agent's last counter is known before its connection is gone
                self.replay.closing(agent_id, entry.received.highest)
        self.bindings.unbind(session, reason)

    def stats_snapshot(self) -> WorkerStats:
        """The counters now, with the admission's and the fault log's (metrics; a worker's `Tag.STATS`)."""
        admission = self.admission
        return snapshot(
            self.stats,
            len(self.sessions),
            admission_refused=admission.refused,
            admission_evicted=admission.evicted,
            admission_timed_out=admission.timed_out,
            unexpected=self.faults.count,
        )

    async def _tick_events(self) -> None:
        """Once a second: the intake pauses or resumes senders. An agent it holds paused looks fresh to the
        manager keep-alive and to the frame deadline, and is acked and reported alive every few seconds
        on its behalf: the pause is ours, so it never changes the agent's status."""
        assert self.intake is not None
        while True:
            await asyncio.sleep(1.0)
            now, monotonic = self.clock(), self.monotonic()
            held, due = self.intake.tick(monotonic)
            for session in held:
                session.last_received = monotonic
                if session.frame_started >= 0:
                    session.frame_started = monotonic
            for session in due:
                entry = self.agent_on(session)
                if entry is not None:
                    self.outbound.send_on(session, entry, control.ACK)
                    self.store.submit(StatusUpdate(entry.number, Trigger.ALIVE, now))

    def flush_event_counts(self) -> None:
        if self._event_counts:
            counts, self._event_counts = self._event_counts, {}
            self.store.count_events(counts)
