"""Bindings without sockets: the overtake rule (connection_overtake_time), and which close reasons start
an agent's connection grace and which only let it go."""

from __future__ import annotations

import pytest

from agentpulse.remoted.bindings import Bindings
from agentpulse.remoted.session import CloseReason, Session
from agentpulse.wire.errors import Reason, WireError
from tests.remoted.fakes import FakeTransport, RecordingGrace

OVERTAKE = 60.0


class Dispatcher:
    """Sessions here are never fed data: only their clock is read."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def handle(self, data: bytes, peer_ip: str, session: Session | None, udp_peer: object = None) -> None:
        raise AssertionError("not fed")

    def refused(self, error: WireError, peer_ip: str, session: Session | None) -> None:
        raise AssertionError("not fed")

    def session_opened(self, session: Session) -> None:
        pass

    def session_closed(self, session: Session) -> None:
        pass


@pytest.fixture
def dispatcher() -> Dispatcher:
    return Dispatcher()


@pytest.fixture
def grace() -> RecordingGrace:
    return RecordingGrace()


@pytest.fixture
def bindings(dispatcher: Dispatcher, grace: RecordingGrace) -> Bindings:
    return Bindings(grace, OVERTAKE, dispatcher.monotonic)


def _session(dispatcher: Dispatcher) -> Session:
    session = Session(dispatcher)
    session.connection_made(FakeTransport())
    return session


def test_a_bound_session_is_found_both_ways_and_reported_once(
    bindings: Bindings, dispatcher: Dispatcher, grace: RecordingGrace
) -> None:
    session = _session(dispatcher)
    bindings.bind(1, session, "001")
    bindings.bind(1, session, "001")  # every message binds again: nothing changes
    assert bindings.session_of(1) is session
    assert bindings.agent_of(session) == 1
    assert grace.events == [("bound", 1)]


def test_a_live_session_keeps_the_key_until_the_overtake_time(
    bindings: Bindings, dispatcher: Dispatcher, grace: RecordingGrace
) -> None:
    first, second = _session(dispatcher), _session(dispatcher)
    bindings.bind(1, first, "001")
    dispatcher.now += OVERTAKE  # silent for exactly the overtake time: not yet
    with pytest.raises(WireError) as caught:
        bindings.bind(1, second, "001")
    assert caught.value.reason is Reason.KEY_IN_USE
    assert bindings.session_of(1) is first and bindings.agent_of(second) is None
    assert not first.closed
    assert grace.events == [("bound", 1)]


def test_a_silent_session_is_overtaken_and_its_close_reports_nothing(
    bindings: Bindings, dispatcher: Dispatcher, grace: RecordingGrace
) -> None:
    first, second = _session(dispatcher), _session(dispatcher)
    bindings.bind(1, first, "001")
    dispatcher.now += OVERTAKE + 0.1
    bindings.bind(1, second, "001")
    assert first.close_reason is CloseReason.OVERTAKEN
    assert bindings.session_of(1) is second and bindings.agent_of(first) is None
    bindings.unbind(first, CloseReason.OVERTAKEN)  # its connection_lost, later
    assert bindings.session_of(1) is second
    assert grace.events == [("bound", 1), ("bound", 1)]


def test_a_session_closed_but_not_yet_lost_gives_the_key_up_at_once(
    bindings: Bindings, dispatcher: Dispatcher, grace: RecordingGrace
) -> None:
    first, second = _session(dispatcher), _session(dispatcher)
    bindings.bind(1, first, "001")
    first.close(CloseReason.REFUSED)
    bindings.bind(1, second, "001")  # no overtake wait: the old one is closing
    assert first.close_reason is CloseReason.REFUSED
    bindings.unbind(first, CloseReason.REFUSED)
    assert bindings.session_of(1) is second
    assert grace.events == [("bound", 1), ("bound", 1)]


# Only a loss the agent did not ask for starts its grace; the others were decided here and say so.
GRACE_OF = {
    CloseReason.PEER_CLOSED: "closed",
    CloseReason.REFUSED: "closed",
    CloseReason.OVERTAKEN: "released",
    CloseReason.KEY_REMOVED: "released",
    CloseReason.TIMEOUT: "released",
    CloseReason.MANAGER_STOPPING: "released",
    CloseReason.FRAME_TIMEOUT: "closed",  # a frame that stalls: the agent's connection is broken
    CloseReason.LIMIT: "closed",  # only unauthenticated connections, which hold no agent
    CloseReason.LEASE_LOST: "closed",  # several nodes: the agent fails over, the other nodes decide
}


def test_every_close_reason_has_a_grace_decision() -> None:
    assert set(GRACE_OF) == set(CloseReason)


@pytest.mark.parametrize("reason", list(CloseReason))
def test_close_reason_decides_between_connection_lost_and_release(
    reason: CloseReason, bindings: Bindings, dispatcher: Dispatcher, grace: RecordingGrace
) -> None:
    session = _session(dispatcher)
    bindings.bind(4, session, "004")
    bindings.unbind(session, reason)
    assert reason.loses_connection is (GRACE_OF[reason] == "closed")
    assert grace.events == [("bound", 4), (GRACE_OF[reason], 4)]
    assert bindings.session_of(4) is None and bindings.agent_of(session) is None
    bindings.unbind(session, reason)  # a second report of the same loss changes nothing
    assert len(grace.events) == 2


def test_an_unbound_session_closing_reports_nothing(
    bindings: Bindings, dispatcher: Dispatcher, grace: RecordingGrace
) -> None:
    bindings.unbind(_session(dispatcher), CloseReason.PEER_CLOSED)
    assert grace.events == []


def test_dropping_an_agent_closes_its_session_and_forgets_its_udp_peer(
    bindings: Bindings, dispatcher: Dispatcher, grace: RecordingGrace
) -> None:
    session = _session(dispatcher)
    bindings.bind(2, session, "002")
    bindings.bind_udp(2, ("10.0.0.2", 5000))
    bindings.drop(2)
    assert session.close_reason is CloseReason.KEY_REMOVED
    assert bindings.session_of(2) is None and bindings.udp_peer_of(2) is None
    bindings.unbind(session, CloseReason.KEY_REMOVED)  # its connection_lost, later
    assert grace.events == [("bound", 2), ("released", 2)]


def test_udp_peer_is_the_last_one_seen(bindings: Bindings, grace: RecordingGrace) -> None:
    bindings.bind_udp(3, ("10.0.0.3", 5000))
    bindings.bind_udp(3, ("10.0.0.3", 5001))
    assert bindings.udp_peer_of(3) == ("10.0.0.3", 5001)
    assert grace.events == []  # UDP agents have no connection to lose
