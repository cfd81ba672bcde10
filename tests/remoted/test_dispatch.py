"""The dispatcher (`Remoted`) without sockets: sessions on fake transports, real agent codecs. What a
message from the wrong agent, a replayed counter or each kind of close means for the store and the grace
tracker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentpulse.agent.connection import AgentCodec
from agentpulse.config import Config, ManagerKeepalive, RemoteConfig
from agentpulse.records import StatusUpdate
from agentpulse.remoted.challenge import CHALLENGE_TIMEOUT
from agentpulse.remoted.journal import AckJournal, read_journals
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import CloseReason, Session, UdpEndpoint
from agentpulse.status import Trigger
from agentpulse.wire import control
from agentpulse.wire.counters import sequence
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.frames import LENGTH
from agentpulse.wire.keys import KeysFile
from agentpulse.wire.secure import CipherKind
from tests.remoted.fakes import FakeDatagramTransport, FakeTransport, RecordingGrace, RecordingStore

KEYS = KeysFile.parse("001 web-01 any k1\n002 web-02 any k2\n003 web-03 any k3\n")
NOW = 1_700_000_000.0
STARTUP = control.build_startup("v4.14.7")
KEEPALIVE = control.build_keepalive("Linux - Wazuh v4.14.7", merged_sum=None)


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0

    def wall(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return self.mono


@dataclass
class Stack:
    clock: Clock
    keys: KeyStore
    store: RecordingStore
    grace: RecordingGrace
    remoted: Remoted

    def connect(self, peer: tuple[str, int] = ("10.0.0.1", 40000)) -> tuple[Session, FakeTransport]:
        session = Session(self.remoted, self.remoted.admission.first_frame_max)
        transport = FakeTransport(peer)
        session.connection_made(transport)
        return session, transport

    def bindings_session(self, agent_id: int) -> Session:
        session = self.remoted.bindings.session_of(agent_id)
        assert session is not None
        return session

    def triggers(self, agent_id: int) -> list[Trigger]:
        return [update.trigger for update in self.store.updates if update.agent_id == agent_id]


def _stack(**remote: object) -> Stack:
    clock = Clock()
    config = Config(remote=RemoteConfig(**remote))  # type: ignore[arg-type]
    keys, store, grace = KeyStore(), RecordingStore(), RecordingGrace()
    remoted = Remoted(config, keys, store, grace, clock=clock.wall, monotonic=clock.monotonic)
    remoted.keys_changed(keys.load(KEYS))
    return Stack(clock, keys, store, grace, remoted)


def _codec(number: int, *, tcp: bool = True) -> AgentCodec:
    key = KEYS.by_id(number)
    assert key is not None
    return AgentCodec(key, tcp=tcp)


def _started(stack: Stack, number: int) -> tuple[Session, FakeTransport, AgentCodec]:
    session, transport = stack.connect()
    codec = _codec(number)
    session.data_received(codec.seal(STARTUP))
    assert [codec.open(frame) for frame in transport.frames()] == [control.Ack()]
    return session, transport, codec


# -- a connection of one agent that sends as another ---------------------------------------------------


def test_a_connection_bound_to_one_agent_that_sends_as_another_is_refused_as_agent_mismatch() -> None:
    stack = _stack()
    session, _, _ = _started(stack, 1)
    other = _codec(2, tcp=False)
    with pytest.raises(WireError) as caught:
        stack.remoted.handle(other.seal(KEEPALIVE), session.peer_ip, session)
    assert caught.value.reason is Reason.AGENT_MISMATCH
    assert "connection of agent 001 sent as another agent" in str(caught.value)
    assert stack.triggers(2) == []


def test_a_mismatch_closes_the_connection_as_refused_and_the_agent_lost_it() -> None:
    stack = _stack()
    session, _, _ = _started(stack, 1)
    session.data_received(_codec(2).seal(KEEPALIVE))
    assert session.close_reason is CloseReason.REFUSED
    session.connection_lost(None)
    assert stack.grace.events == [("bound", 1), ("closed", 1)]
    assert stack.triggers(2) == []


# -- receive counters -------------------------------------------------------------------------------


def _body(codec: AgentCodec, payload: bytes) -> bytes:
    """One message as the dispatcher gets it: the frame without its length."""
    return codec.seal(payload)[LENGTH.size :]


def test_a_replayed_message_is_refused_when_verify_msg_id_is_on() -> None:
    stack = _stack(verify_msg_id=True)
    session, _, codec = _started(stack, 1)
    sealed = _body(codec, KEEPALIVE)  # 0:2, after the startup's 0:1
    stack.remoted.handle(sealed, session.peer_ip, session)
    with pytest.raises(WireError) as caught:
        stack.remoted.handle(sealed, session.peer_ip, session)
    assert caught.value.reason is Reason.DUPLICATE_COUNTER
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.ALIVE]
    entry = stack.keys.entries[1]
    assert entry.received.highest == sequence(0, 2)


def test_an_older_global_counter_is_refused_when_verify_msg_id_is_on() -> None:
    stack = _stack(verify_msg_id=True)
    session, _, codec = _started(stack, 1)
    codec.counter.global_counter = 5
    session.data_received(codec.seal(KEEPALIVE))
    assert not session.closed
    codec.counter.global_counter = 4
    with pytest.raises(WireError) as caught:
        stack.remoted.handle(_body(codec, KEEPALIVE), session.peer_ip, session)
    assert caught.value.reason is Reason.OLD_COUNTER


def test_a_repeated_counter_on_the_current_connection_is_accepted_when_verify_msg_id_is_off() -> None:
    # Wazuh's agent seals outside its send lock: two threads' messages may cross on one connection.
    stack = _stack(verify_msg_id=False)
    session, _, _ = _started(stack, 1)
    sealed = _body(_codec(1), KEEPALIVE)  # 0:1 again, the startup's own counter
    stack.remoted.handle(sealed, session.peer_ip, session)
    stack.remoted.handle(sealed, session.peer_ip, session)
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.ALIVE, Trigger.ALIVE]


# -- close reasons and the grace decision ---------------------------------------------------------------


def test_a_connection_the_agent_closes_starts_its_grace() -> None:
    stack = _stack()
    session, _, _ = _started(stack, 1)
    session.connection_lost(None)
    assert session.close_reason is CloseReason.PEER_CLOSED
    assert stack.grace.events == [("bound", 1), ("closed", 1)]
    assert stack.remoted.sessions == set()


def test_a_shutdown_is_the_status_change_and_the_close_after_it_a_plain_loss() -> None:
    stack = _stack()
    session, _, codec = _started(stack, 1)
    session.data_received(codec.seal(control.SHUTDOWN))
    assert not session.closed  # the agent closes it
    session.connection_lost(None)
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.SHUTDOWN]
    assert stack.grace.events == [("bound", 1), ("closed", 1)]


def test_garbage_closes_the_connection_as_refused() -> None:
    stack = _stack()
    session, _, _ = _started(stack, 1)
    session.data_received(b"\x00\x00\x00\x05hello")
    assert session.close_reason is CloseReason.REFUSED
    session.connection_lost(None)
    assert stack.grace.events == [("bound", 1), ("closed", 1)]


def test_a_manager_keepalive_timeout_disconnects_with_code_4_and_lets_the_connection_go() -> None:
    stack = _stack()
    settings = ManagerKeepalive(enabled=True, interval=2.0, timeout=5.0)
    scheduler = KeepaliveScheduler(stack.remoted, settings)
    session, transport, codec = _started(stack, 1)
    stack.clock.mono += 2.0
    scheduler.check(stack.clock.mono)
    probe = codec.open(transport.frames()[-1])
    assert isinstance(probe, control.Request) and probe.payload == control.GETSTATE
    stack.clock.mono += 3.0
    scheduler.check(stack.clock.mono)
    assert session.close_reason is CloseReason.TIMEOUT
    session.connection_lost(None)
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.TIMEOUT]
    assert stack.grace.events == [("bound", 1), ("released", 1)]


def test_an_overtaken_connection_closes_without_a_grace() -> None:
    stack = _stack(connection_overtake_time=10.0)
    old, _, codec = _started(stack, 1)
    stack.clock.mono += 10.5
    new, transport = stack.connect(("10.0.0.1", 40001))
    new.data_received(codec.seal(STARTUP))  # the agent's count goes on
    assert old.close_reason is CloseReason.OVERTAKEN and not new.closed
    old.connection_lost(None)
    assert stack.grace.events == [("bound", 1), ("bound", 1)]
    assert stack.remoted.outbound.send_to_agent(1, control.build_request("1", "agent", "getstate"))
    assert len(transport.written) == 2  # the startup's ack, then this


def test_a_second_connection_within_the_overtake_time_is_refused_and_the_first_keeps_the_key() -> None:
    stack = _stack(connection_overtake_time=10.0)
    old, _, codec = _started(stack, 1)
    stack.clock.mono += 9.0
    new, _ = stack.connect(("10.0.0.1", 40001))
    new.data_received(codec.seal(STARTUP))
    assert new.close_reason is CloseReason.REFUSED and not old.closed
    new.connection_lost(None)
    assert stack.grace.events == [("bound", 1)]


def test_a_removed_key_closes_its_connection_releases_it_and_disconnects_the_agent() -> None:
    stack = _stack()
    session, _, _ = _started(stack, 1)
    _started(stack, 2)
    stack.remoted.keys_changed(stack.keys.load(KeysFile.parse("002 web-02 any k2\n003 web-03 any k3\n")))
    assert session.close_reason is CloseReason.KEY_REMOVED
    assert stack.store.updates[-1] == StatusUpdate(1, Trigger.CONNECTION_LOST, NOW)
    session.connection_lost(None)
    assert stack.grace.events == [("bound", 1), ("bound", 2), ("released", 1)]
    assert not stack.remoted.outbound.send_to_agent(1, control.ACK)


def test_a_changed_key_closes_its_connection_but_the_agent_stays() -> None:
    stack = _stack()
    session, _, _ = _started(stack, 1)
    stack.remoted.keys_changed(stack.keys.load(KeysFile.parse("001 web-01 any new-key\n")))
    assert session.close_reason is CloseReason.KEY_REMOVED
    assert stack.triggers(1) == [Trigger.STARTUP]  # no CONNECTION_LOST: it may come back with the new key
    assert stack.grace.events == [("bound", 1), ("released", 1)]


def test_stopping_lets_every_connection_go_whatever_closed_it() -> None:
    stack = _stack()
    first, _, _ = _started(stack, 1)
    second, _, _ = _started(stack, 2)
    second.data_received(b"\x00\x00\x00\x05hello")  # refused just before the stop, lost just after
    asyncio.run(stack.remoted.stop())
    assert first.close_reason is CloseReason.MANAGER_STOPPING
    assert second.close_reason is CloseReason.REFUSED
    first.connection_lost(None)
    second.connection_lost(None)
    assert stack.grace.events == [("bound", 1), ("bound", 2), ("released", 1), ("released", 2)]


# -- replies -------------------------------------------------------------------------------------------


def test_udp_replies_go_to_the_last_peer_of_the_agent() -> None:
    stack = _stack(protocols=("udp",))
    udp = UdpEndpoint(stack.remoted)
    udp_transport = FakeDatagramTransport()
    udp.connection_made(udp_transport)
    stack.remoted.outbound.udp = udp
    codec = _codec(3, tcp=False)
    udp.datagram_received(codec.seal(STARTUP), ("10.0.0.3", 5000))
    udp.datagram_received(codec.seal(KEEPALIVE), ("10.0.0.3", 5001))
    assert [addr for _, addr in udp_transport.sent] == [("10.0.0.3", 5000), ("10.0.0.3", 5001)]
    assert all(codec.open(data) == control.Ack() for data, _ in udp_transport.sent)
    assert stack.remoted.outbound.send_to_agent(3, control.ACK)
    assert udp_transport.sent[-1][1] == ("10.0.0.3", 5001)
    assert stack.grace.events == []


def test_a_reply_beyond_the_send_buffer_is_dropped() -> None:
    stack = _stack()
    session, transport, _ = _started(stack, 1)
    transport.buffered = 10**9
    assert not stack.remoted.outbound.send_on(session, stack.keys.entries[1], control.ACK)
    assert len(transport.written) == 1


def test_nothing_is_sent_to_an_agent_without_a_connection() -> None:
    stack = _stack()
    assert not stack.remoted.outbound.send_to_agent(1, control.ACK)
    assert not stack.remoted.outbound.send_to_agent(99, control.ACK)


# -- replays on a new connection, and counters that went back (admission, challenge) ----------------


def test_a_shutdown_replayed_on_a_new_connection_is_refused_and_changes_nothing() -> None:
    stack = _stack()
    _, _, codec = _started(stack, 1)
    captured = codec.seal(control.SHUTDOWN)  # seen on the wire, never delivered
    stack.remoted.handle(codec.seal(KEEPALIVE)[LENGTH.size :], "10.0.0.1", stack.bindings_session(1))
    replay, _ = stack.connect(("10.0.0.9", 40009))
    replay.data_received(captured)
    assert replay.close_reason is CloseReason.REFUSED
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.ALIVE]


def test_a_keepalive_replayed_after_the_connection_closed_is_refused() -> None:
    stack = _stack()
    session, _, codec = _started(stack, 1)
    captured = codec.seal(KEEPALIVE)
    session.data_received(captured)
    session.connection_lost(None)
    replay, transport = stack.connect(("10.0.0.9", 40009))
    replay.data_received(captured)
    assert replay.close_reason is CloseReason.REFUSED and transport.written == []
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.ALIVE]
    assert stack.grace.events == [("bound", 1), ("closed", 1)]


def test_a_replayed_startup_after_the_connection_closed_is_challenged_and_never_counts() -> None:
    stack = _stack()
    session, _, codec = _started(stack, 1)
    captured_startup = codec.seal(STARTUP)
    captured_keepalive = codec.seal(KEEPALIVE)
    session.data_received(codec.seal(KEEPALIVE))
    session.connection_lost(None)
    replay, transport = stack.connect(("10.0.0.9", 40009))
    replay.data_received(captured_startup)
    replies = [codec.open(frame) for frame in transport.frames()]
    assert replies[0] == control.Ack()
    assert isinstance(replies[1], control.Request) and replies[1].payload == control.GETSTATE
    for _ in range(3):
        replay.data_received(captured_keepalive)
    stack.clock.mono += CHALLENGE_TIMEOUT + 1
    stack.remoted.arrivals.expire_challenges()
    assert replay.close_reason is CloseReason.REFUSED
    replay.connection_lost(None)
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.ALIVE]  # nothing from the replay
    assert stack.grace.events == [("bound", 1), ("closed", 1)]


def test_a_reinstalled_agent_that_answers_the_challenge_is_accepted() -> None:
    stack = _stack()
    session, _, codec = _started(stack, 1)
    for _ in range(5):
        session.data_received(codec.seal(KEEPALIVE))
    session.connection_lost(None)
    reinstalled = _codec(1)  # sender_counter deleted: 0:1 again
    new, transport = stack.connect(("10.0.0.1", 40100))
    new.data_received(reinstalled.seal(STARTUP))
    new.data_received(reinstalled.seal(KEEPALIVE))  # before the answer: acked, not counted yet
    request = reinstalled.open(transport.frames()[1])
    assert isinstance(request, control.Request)
    assert stack.triggers(1)[-1] is Trigger.ALIVE and len(stack.triggers(1)) == 6
    new.data_received(reinstalled.seal(control.build_request_reply(request.counter, '{"error":0}')))
    assert stack.triggers(1)[-2:] == [Trigger.STARTUP, Trigger.ALIVE]
    assert stack.grace.events[-1] == ("bound", 1) and not new.closed
    new.data_received(reinstalled.seal(KEEPALIVE))
    assert reinstalled.open(transport.frames()[-1]) == control.Ack()
    assert len(stack.remoted.arrivals.challenges) == 0


def test_a_wrong_answer_to_the_challenge_counts_for_nothing() -> None:
    stack = _stack()
    session, _, _ = _started(stack, 1)
    session.connection_lost(None)
    replay, _ = stack.connect(("10.0.0.9", 40009))
    replay.data_received(_codec(1).seal(STARTUP))
    replay.data_received(_codec(1).seal(control.build_request_reply("deadbeef", '{"error":0}')))
    assert stack.triggers(1) == [Trigger.STARTUP]
    assert len(stack.remoted.arrivals.challenges) == 1


def test_counters_that_went_back_are_refused_with_verify_msg_id() -> None:
    stack = _stack(verify_msg_id=True)
    session, _, _ = _started(stack, 1)
    session.connection_lost(None)
    new, transport = stack.connect(("10.0.0.1", 40100))
    new.data_received(_codec(1).seal(STARTUP))
    assert new.close_reason is CloseReason.REFUSED and transport.written == []


def test_a_restarted_agent_whose_count_goes_on_is_admitted_at_once() -> None:
    stack = _stack()
    session, _, codec = _started(stack, 1)
    session.connection_lost(None)
    new, transport = stack.connect(("10.0.0.1", 40100))
    new.data_received(codec.seal(STARTUP))
    assert [codec.open(frame) for frame in transport.frames()] == [control.Ack()]
    assert stack.triggers(1) == [Trigger.STARTUP, Trigger.STARTUP]


def test_a_udp_datagram_replayed_from_another_address_is_refused() -> None:
    stack = _stack(protocols=("udp",))
    udp = UdpEndpoint(stack.remoted)
    udp_transport = FakeDatagramTransport()
    udp.connection_made(udp_transport)
    stack.remoted.outbound.udp = udp
    codec = _codec(3, tcp=False)
    udp.datagram_received(codec.seal(STARTUP), ("10.0.0.3", 5000))
    captured = codec.seal(control.SHUTDOWN)
    udp.datagram_received(codec.seal(KEEPALIVE), ("10.0.0.3", 5000))
    udp.datagram_received(captured, ("10.9.9.9", 6000))
    assert stack.triggers(3) == [Trigger.STARTUP, Trigger.ALIVE]


def test_a_udp_datagram_replayed_from_the_agents_own_address_is_refused() -> None:
    stack = _stack(protocols=("udp",))
    udp = UdpEndpoint(stack.remoted)
    udp.connection_made(FakeDatagramTransport())
    stack.remoted.outbound.udp = udp
    codec = _codec(3, tcp=False)
    udp.datagram_received(codec.seal(STARTUP), ("10.0.0.3", 5000))
    keepalive = codec.seal(KEEPALIVE)
    for _ in range(3):
        udp.datagram_received(keepalive, ("10.0.0.3", 5000))
    assert stack.triggers(3) == [Trigger.STARTUP, Trigger.ALIVE]


def test_a_refused_replay_in_the_other_cipher_leaves_the_agents_replies_alone() -> None:
    stack = _stack()
    session, transport, codec = _started(stack, 1)
    session.data_received(codec.seal(KEEPALIVE))
    key = KEYS.by_id(1)
    assert key is not None
    old_blowfish = AgentCodec(key, CipherKind.BLOWFISH).seal(control.SHUTDOWN)  # 0:1, from long ago
    replay, _ = stack.connect(("10.0.0.9", 40009))
    replay.data_received(old_blowfish)
    assert replay.close_reason is CloseReason.REFUSED
    assert stack.keys.entries[1].reply_cipher is CipherKind.AES
    session.data_received(codec.seal(KEEPALIVE))
    assert codec.open(transport.frames()[-1]) == control.Ack()


class JournalCheckingTransport(FakeTransport):
    """Reads the journal at the moment each reply is written: what was recorded before the ack."""

    def __init__(self, journal: Path) -> None:
        super().__init__()
        self.journal = journal
        self.seen_at_write: list[list[int]] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.seen_at_write.append([record.agent_id for record in read_journals(self.journal)])
        super().write(data)


def test_an_acknowledgement_is_journaled_before_it_is_sent(tmp_path: Path) -> None:
    stack = _stack()
    journal = AckJournal(tmp_path, 0)
    journal.open()
    stack.remoted.journal = journal
    session = Session(stack.remoted)
    transport = JournalCheckingTransport(tmp_path)
    session.connection_made(transport)
    codec = _codec(1)
    session.data_received(codec.seal(STARTUP))
    session.data_received(codec.seal(KEEPALIVE))  # after a startup: not journaled again
    session.data_received(codec.seal(KEEPALIVE))
    journal.close()
    assert transport.seen_at_write == [[1], [1], [1]]
    assert [(r.agent_id, r.trigger) for r in read_journals(tmp_path)] == [(1, Trigger.STARTUP)]


def test_a_refused_startup_is_not_journaled_and_a_udp_keepalive_alone_is_once(tmp_path: Path) -> None:
    stack = _stack(protocols=("udp",))
    journal = AckJournal(tmp_path, 0)
    journal.open()
    stack.remoted.journal = journal
    udp = UdpEndpoint(stack.remoted)
    udp.connection_made(FakeDatagramTransport())
    stack.remoted.outbound.udp = udp
    refused, alive = _codec(2, tcp=False), _codec(3, tcp=False)
    udp.datagram_received(refused.seal(control.build_startup("v9.0.0")), ("10.0.0.3", 5000))
    for _ in range(3):
        udp.datagram_received(alive.seal(KEEPALIVE), ("10.0.0.4", 5000))
    journal.close()
    assert [(r.agent_id, r.trigger) for r in read_journals(tmp_path)] == [(3, Trigger.ALIVE)]
