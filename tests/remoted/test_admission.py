"""Before authentication, without sockets: the per-address and total caps, the oldest unauthenticated
connection closed first, the frame deadline and the small buffers of a connection nobody has vouched for."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from agentpulse.agent.connection import AgentCodec
from agentpulse.config import Config, RemoteConfig
from agentpulse.remoted.admission import COUNTED_AFTER
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import UNAUTHENTICATED_SEND_BUFFER, CloseReason, Session
from agentpulse.status import Trigger
from agentpulse.wire import control
from agentpulse.wire.frames import LENGTH
from agentpulse.wire.keys import KeysFile
from tests.remoted.fakes import FakeTransport, RecordingGrace, RecordingStore

KEYS = KeysFile.parse("001 web-01 any k1\n002 web-02 any k2\n")
STARTUP = control.build_startup("v4.14.7")
KEEPALIVE = control.build_keepalive("Linux - Wazuh v4.14.7", merged_sum=None)
PING = LENGTH.pack(5) + b"#ping"


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0

    def wall(self) -> float:
        return 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono


class Stack:
    def __init__(self, **remote: object) -> None:
        self.clock = Clock()
        self.store, self.grace = RecordingStore(), RecordingGrace()
        keys = KeyStore()
        config = Config(remote=RemoteConfig(**remote))  # type: ignore[arg-type]
        self.remoted = Remoted(
            config, keys, self.store, self.grace, clock=self.clock.wall, monotonic=self.clock.monotonic
        )
        self.remoted.keys_changed(keys.load(KEYS))
        self.admission = self.remoted.admission
        self.port = 40000

    def connect(self, ip: str = "10.0.0.1") -> tuple[Session, FakeTransport]:
        """A connection as the listener makes it (`Remoted.start`'s factory)."""
        session = Session(self.remoted, self.admission.first_frame_max)
        self.port += 1
        transport = FakeTransport((ip, self.port))
        session.connection_made(transport)
        return session, transport

    def lose(self, session: Session) -> None:
        """The event loop's next turn after a close: the protocol hears its connection is gone."""
        session.connection_lost(None)

    def advance(self, seconds: float) -> None:
        self.clock.mono += seconds
        self.admission.sweep(self.clock.mono)


def codec(number: int) -> AgentCodec:
    key = KEYS.by_id(number)
    assert key is not None
    return AgentCodec(key)


# -- caps -------------------------------------------------------------------------------------------------


def test_connections_past_the_per_address_cap_are_refused_at_once_and_other_addresses_still_get_in() -> None:
    stack = Stack(max_unauthenticated_per_ip=3)
    held = [stack.connect("10.0.0.9") for _ in range(3)]
    stack.advance(COUNTED_AFTER)
    refused, transport = stack.connect("10.0.0.9")
    assert refused.close_reason is CloseReason.LIMIT and transport.aborted
    assert refused not in stack.remoted.sessions
    assert all(not session.closed for session, _ in held)
    other, _ = stack.connect("10.0.0.1")
    assert not other.closed
    assert (stack.admission.refused, stack.admission.unauthenticated) == (1, 4)
    stack.lose(refused)
    assert stack.admission.connections == 4


def test_a_burst_from_one_address_is_admitted_while_it_is_young() -> None:
    stack = Stack(max_unauthenticated_per_ip=3)
    burst = [stack.connect("10.0.0.9")[0] for _ in range(200)]  # 200 agents behind one NAT, at once
    assert not any(session.closed for session in burst)
    stack.advance(COUNTED_AFTER)
    late, _ = stack.connect("10.0.0.9")
    assert late.close_reason is CloseReason.LIMIT  # the 200 that never authenticated count now


def test_an_authenticated_connection_frees_its_addresss_slot() -> None:
    stack = Stack(max_unauthenticated_per_ip=1)
    first, _ = stack.connect()
    stack.advance(COUNTED_AFTER)
    first.data_received(codec(1).seal(STARTUP))
    assert first.authenticated
    second, _ = stack.connect()
    assert not second.closed


def test_a_closed_connection_frees_its_addresss_slot() -> None:
    stack = Stack(max_unauthenticated_per_ip=1)
    first, _ = stack.connect()
    stack.advance(COUNTED_AFTER)
    stack.lose(first)
    second, _ = stack.connect()
    assert not second.closed and stack.admission.connections == 1


def test_at_the_total_cap_the_oldest_unauthenticated_connection_is_closed_for_the_new_one() -> None:
    stack = Stack(max_unauthenticated=3)
    sessions = [stack.connect(f"10.0.0.{n}")[0] for n in range(1, 4)]
    newest, _ = stack.connect("10.0.0.4")
    assert sessions[0].close_reason is CloseReason.LIMIT
    assert not any(session.closed for session in [*sessions[1:], newest])
    assert (stack.admission.evicted, stack.admission.unauthenticated) == (1, 3)
    stack.lose(sessions[0])  # its slot was released at eviction; the late connection_lost changes nothing
    assert stack.admission.connections == 3


def test_evictable_counts_the_oldest_unauthenticated_that_waited_counted_after_oldest_first() -> None:
    stack = Stack(max_unauthenticated=5)
    old = [stack.connect(f"10.0.0.{n}")[0] for n in range(1, 4)]
    stack.advance(COUNTED_AFTER)
    stack.connect("10.0.0.9")  # young: the loop may owe it an answer
    assert stack.admission.evictable(10) == 3
    assert stack.admission.evictable(2) == 2
    stack.admission.authenticated(old[1])  # no longer waiting: the rest still count
    assert stack.admission.evictable(10) == 2
    stack.admission.allowance = lambda: COUNTED_AFTER  # the loop is a second behind: none waited on their own
    assert stack.admission.evictable(10) == 0


def test_at_the_connection_cap_the_oldest_unauthenticated_goes_and_authenticated_ones_stay() -> None:
    stack = Stack(max_connections=3)
    agent, _ = stack.connect()
    agent.data_received(codec(1).seal(STARTUP))
    old, _ = stack.connect("10.0.0.2")
    young, _ = stack.connect("10.0.0.3")
    new, _ = stack.connect("10.0.0.4")
    assert old.close_reason is CloseReason.LIMIT
    assert not any(session.closed for session in (agent, young, new))
    assert stack.admission.connections == 3


def test_at_the_connection_cap_with_every_connection_authenticated_the_new_one_is_refused() -> None:
    stack = Stack(max_connections=2)
    for number in (1, 2):
        session, _ = stack.connect()
        session.data_received(codec(number).seal(STARTUP))
    new, _ = stack.connect()
    assert new.close_reason is CloseReason.LIMIT
    assert stack.admission.refused == 1 and stack.admission.connections == 2


def test_auto_connection_cap_leaves_a_tenth_of_the_open_file_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = Stack().admission.connection_cap
    if soft == resource.RLIM_INFINITY:
        assert cap == 0
    else:
        assert cap == soft - max(64, soft // 10)


# -- the frame deadline -----------------------------------------------------------------------------------


def test_an_idle_connection_is_closed_when_its_frame_timeout_passes_not_before() -> None:
    stack = Stack(frame_timeout=10.0)
    session, transport = stack.connect()
    stack.advance(9.9)
    assert not session.closed
    stack.advance(0.2)
    assert session.close_reason is CloseReason.FRAME_TIMEOUT and transport.aborted
    assert stack.admission.timed_out == 1


def test_a_partial_header_does_not_extend_the_deadline() -> None:
    stack = Stack(frame_timeout=10.0)
    session, _ = stack.connect()
    stack.advance(9.0)
    session.data_received(b"\x10\x00")
    stack.advance(1.1)
    assert session.close_reason is CloseReason.FRAME_TIMEOUT


def test_pings_before_authentication_are_answered_but_do_not_extend_the_deadline() -> None:
    stack = Stack(frame_timeout=10.0)
    session, transport = stack.connect()
    for _ in range(10):
        stack.advance(1.25)
        if not session.closed:
            session.data_received(PING)
    assert session.close_reason is CloseReason.FRAME_TIMEOUT
    assert transport.frames()[0] == b"#pong"


def test_an_authenticated_connection_without_a_frame_begun_has_no_deadline() -> None:
    stack = Stack(frame_timeout=10.0)
    session, _ = stack.connect()
    session.data_received(codec(1).seal(STARTUP))
    stack.advance(60.0)
    assert not session.closed
    assert len(stack.admission) == 0  # its entry was dropped at the first visit


def test_an_authenticated_agent_whose_frame_stalls_is_closed_and_loses_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = Stack(frame_timeout=10.0)
    session, _ = stack.connect()
    agent = codec(1)
    session.data_received(agent.seal(STARTUP))
    stack.advance(30.0)
    frame = agent.seal(KEEPALIVE)
    session.data_received(frame[:10])
    stack.advance(5.0)
    session.data_received(frame[10:20])  # a byte now and then does not move the deadline
    with caplog.at_level(logging.WARNING):
        stack.advance(5.1)
    assert session.close_reason is CloseReason.FRAME_TIMEOUT
    assert [record.getMessage() for record in caplog.records] == [
        "Connection from agent 001 closed: a frame begun 10.1 s ago has only 20 bytes (frame_timeout 10 s)"
    ]
    stack.lose(session)
    assert stack.grace.events == [("bound", 1), ("closed", 1)]  # lost: its grace starts


def test_a_split_frame_finished_in_time_keeps_the_connection() -> None:
    stack = Stack(frame_timeout=10.0)
    session, transport = stack.connect()
    agent = codec(1)
    session.data_received(agent.seal(STARTUP))
    frame = agent.seal(KEEPALIVE)
    session.data_received(frame[:10])
    stack.advance(9.0)
    session.data_received(frame[10:])
    stack.advance(5.0)
    assert not session.closed and session.frame_started < 0
    assert len(transport.written) == 2  # both acked


def test_a_frame_begun_after_another_ended_in_the_same_read_gets_its_own_deadline() -> None:
    stack = Stack(frame_timeout=10.0)
    session, _ = stack.connect()
    agent = codec(1)
    session.data_received(agent.seal(STARTUP))
    first, second = agent.seal(KEEPALIVE), agent.seal(KEEPALIVE)
    session.data_received(first[:10])
    stack.advance(8.0)
    session.data_received(first[10:] + second[:10])
    stack.advance(8.0)  # 16 s after the first began, 8 s after the second did
    assert not session.closed
    stack.advance(2.1)
    assert session.close_reason is CloseReason.FRAME_TIMEOUT


def test_a_session_has_one_deadline_entry_however_often_its_frames_split() -> None:
    stack = Stack(frame_timeout=10.0)
    session, _ = stack.connect()
    agent = codec(1)
    session.data_received(agent.seal(STARTUP))
    for _ in range(100):
        frame = agent.seal(KEEPALIVE)
        session.data_received(frame[:10])
        session.data_received(frame[10:])
    assert len(stack.admission) == 1


# -- buffers before authentication ------------------------------------------------------------------------


def test_a_frame_longer_than_the_unauthenticated_limit_is_refused_before_it_is_buffered() -> None:
    stack = Stack(max_unauthenticated_frame=1024)
    session, _ = stack.connect()
    session.data_received(LENGTH.pack(1025) + b"x" * 500)
    assert session.close_reason is CloseReason.REFUSED
    assert session.decoder.buffered == 0


def test_a_closed_connection_keeps_no_buffered_bytes_while_its_deadline_entry_waits() -> None:
    stack = Stack()
    session, _ = stack.connect()
    session.data_received(LENGTH.pack(16000) + b"x" * 15000)
    assert session.decoder.buffered == 15004
    session.close(CloseReason.LIMIT)  # as an eviction does
    assert session.decoder.buffered == 0
    peer_gone, _ = stack.connect()
    peer_gone.data_received(b"\x10\x00")
    peer_gone.connection_lost(None)
    assert peer_gone.decoder.buffered == 0


def test_after_authentication_frames_up_to_os_maxstr_are_read() -> None:
    stack = Stack(max_unauthenticated_frame=1024)
    session, _ = stack.connect()
    agent = codec(1)
    session.data_received(agent.seal(STARTUP))
    event = b"1:syslog:" + os.urandom(4000)  # incompressible: a frame of about 4 KB
    session.data_received(agent.seal(event))
    assert not session.closed
    assert stack.store.updates[-1].trigger is Trigger.ALIVE


def test_more_than_eight_pings_before_authentication_are_refused() -> None:
    stack = Stack()
    session, transport = stack.connect()
    session.data_received(PING * 8)
    assert not session.closed and len(transport.written) == 8
    session.data_received(PING)
    assert session.close_reason is CloseReason.REFUSED
    assert len(transport.written) == 8


def test_an_authenticated_agent_may_ping_as_often_as_it_likes() -> None:
    stack = Stack()
    session, transport = stack.connect()
    session.data_received(codec(1).seal(STARTUP))
    session.data_received(PING * 50)
    assert not session.closed and len(transport.written) == 51


def test_a_peer_that_never_reads_gets_no_more_pongs_once_a_kilobyte_is_queued() -> None:
    stack = Stack()
    session, transport = stack.connect()
    session.data_received(PING)
    transport.buffered = UNAUTHENTICATED_SEND_BUFFER + 1
    session.data_received(PING * 5)
    assert len(transport.written) == 1


class SocketTransport(FakeTransport):
    """A fake transport over a real socket, so the kernel's count of unread bytes (FIONREAD) is true."""

    def __init__(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        super().__init__(peer)
        self.sock = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else super().get_extra_info(name, default)


def test_a_startup_unread_in_the_kernel_at_the_deadline_is_the_loops_delay_not_the_peers() -> None:
    stack = Stack(frame_timeout=10.0)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        session = Session(stack.remoted, stack.admission.first_frame_max)
        transport = SocketTransport(ours, ("10.0.0.7", 40000))
        session.connection_made(transport)
        theirs.sendall(b"\x00" * 16)  # sent at once, not read yet: the loop is behind
        stack.advance(10.5)
        assert not session.closed and stack.admission.timed_out == 0
        ours.recv(16)  # read at last (here: consumed, as if it held nothing of a frame)
        stack.advance(stack.admission.tick)
        assert session.close_reason is CloseReason.FRAME_TIMEOUT
