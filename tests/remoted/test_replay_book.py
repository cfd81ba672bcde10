"""The replay rule with several workers, without sockets: the manager's book (who holds an agent, its highest
counter) and a dispatcher whose connection waits for the answer."""

from __future__ import annotations

from agentpulse.agent.connection import AgentCodec
from agentpulse.config import Config, RemoteConfig
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.replay import ADMIT_TIMEOUT, PROVISIONAL_TIMEOUT, Answer, AnswerCallback, ReplayBook
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import CloseReason, Session
from agentpulse.status import Trigger
from agentpulse.wire import control
from agentpulse.wire.counters import Verdict
from agentpulse.wire.keys import KeysFile
from tests.remoted.fakes import FakeTransport, RecordingGrace, RecordingStore

KEYS = KeysFile.parse("001 web-01 any k1\n")
STARTUP = control.build_startup("v4.14.7")
KEEPALIVE = control.build_keepalive("Linux - Wazuh v4.14.7", merged_sum=None)
OVERTAKE = 60.0


class Book:
    def __init__(self) -> None:
        self.now = 1000.0
        self.masks: dict[int, int] = {}  # what the grace tracker would say
        self.book = ReplayBook(lambda agent: self.masks.get(agent, 0), OVERTAKE, False, lambda: self.now)


def test_the_first_counter_ever_is_admitted_and_the_worker_holds_the_agent_until_told_otherwise() -> None:
    b = Book()
    assert b.book.decide(1, 7, 50, True, 0).verdict is Verdict.ADMIT
    assert b.book.decide(2, 7, 60, True, 0).verdict is Verdict.KEY_IN_USE  # worker 1 has not bound it yet
    b.book.unadmitted(7, 1)
    assert b.book.decide(2, 7, 60, True, 0).verdict is Verdict.ADMIT


def test_a_replay_of_the_last_counter_reported_at_close_is_refused_on_another_worker() -> None:
    b = Book()
    b.book.decide(1, 7, 50, True, 0)
    b.book.bound(7, 1)
    b.masks[7] = 1 << 1
    b.book.report({7: 90})  # worker 1, as the agent's connection closes
    del b.masks[7]
    decision = b.book.decide(2, 7, 90, False, 0)
    assert decision.verdict is Verdict.REPLAY and decision.highest == 90
    assert b.book.decide(2, 7, 90, True, 0).verdict is Verdict.CHALLENGE


def test_a_live_holder_on_another_worker_keeps_the_key() -> None:
    b = Book()
    b.book.decide(1, 7, 50, True, 0)
    b.book.bound(7, 1)
    b.masks[7] = 1 << 1
    b.now += OVERTAKE - 1
    assert b.book.decide(2, 7, 51, True, 0).verdict is Verdict.KEY_IN_USE


def test_a_silent_holder_on_another_worker_is_overtaken_by_newer_counters() -> None:
    b = Book()
    b.book.decide(1, 7, 50, True, 0)
    b.book.bound(7, 1)
    b.masks[7] = 1 << 1
    b.now += OVERTAKE + 1
    assert b.book.decide(2, 7, 40, True, 0).verdict is Verdict.KEY_IN_USE  # a reset waits for the close
    decision = b.book.decide(2, 7, 51, True, 0)
    assert decision.verdict is Verdict.ADMIT and decision.overtaken == [1]


def test_reports_keep_a_talking_holder_live() -> None:
    b = Book()
    b.book.decide(1, 7, 50, True, 0)
    b.book.bound(7, 1)
    b.masks[7] = 1 << 1
    for _ in range(3):
        b.now += OVERTAKE / 2
        b.book.report({7: 60})
    assert b.book.decide(2, 7, 61, True, 0).verdict is Verdict.KEY_IN_USE


def test_an_unconfirmed_admission_stops_holding_after_a_while_and_a_lost_worker_at_once() -> None:
    b = Book()
    b.book.decide(1, 7, 50, True, 0)
    b.now += PROVISIONAL_TIMEOUT + 1
    assert b.book.decide(2, 7, 51, True, 0).verdict is Verdict.ADMIT
    b.book.worker_lost(2)
    assert b.book.decide(1, 7, 52, True, 0).verdict is Verdict.ADMIT


def test_the_highest_known_to_the_asking_worker_counts_too() -> None:
    b = Book()
    assert b.book.decide(1, 7, 50, False, 80).verdict is Verdict.REPLAY


def test_a_forgotten_agent_starts_again() -> None:
    b = Book()
    b.book.decide(1, 7, 50, True, 0)
    b.book.unadmitted(7, 1)
    b.book.forget([7])
    assert b.book.decide(2, 7, 1, False, 0).verdict is Verdict.ADMIT


# -- a worker's dispatcher: the connection waits for the answer ---------------------------------------


class AskingReplayGuard:
    """A worker's guard whose answers the test gives."""

    reports = True

    def __init__(self) -> None:
        self.questions: list[tuple[int, int, bool, int]] = []
        self.callbacks: list[AnswerCallback] = []
        self.unadmitted_agents: list[int] = []
        self.closing_counters: list[tuple[int, int]] = []
        self.reported: list[dict[int, int]] = []

    def decide(self, agent_id: int, seq: int, startup: bool, highest: int) -> Answer | None:
        return None

    def ask(self, agent_id: int, seq: int, startup: bool, highest: int, callback: AnswerCallback) -> None:
        self.questions.append((agent_id, seq, startup, highest))
        self.callbacks.append(callback)

    def unadmitted(self, agent_id: int) -> None:
        self.unadmitted_agents.append(agent_id)

    def closing(self, agent_id: int, highest: int) -> None:
        self.closing_counters.append((agent_id, highest))

    def report(self, counters: dict[int, int]) -> None:
        self.reported.append(counters)


def _worker() -> tuple[Remoted, AskingReplayGuard, RecordingStore]:
    guard, store = AskingReplayGuard(), RecordingStore()
    keys = KeyStore()
    remoted = Remoted(Config(remote=RemoteConfig()), keys, store, RecordingGrace(), replay=guard)
    remoted.keys_changed(keys.load(KEYS))
    return remoted, guard, store


def _connect(remoted: Remoted) -> tuple[Session, FakeTransport]:
    session, transport = Session(remoted), FakeTransport()
    session.connection_made(transport)
    return session, transport


def _codec() -> AgentCodec:
    key = KEYS.by_id(1)
    assert key is not None
    return AgentCodec(key)


def test_a_new_connection_waits_for_the_answer_and_then_goes_on_in_order() -> None:
    remoted, guard, store = _worker()
    session, transport = _connect(remoted)
    codec = _codec()
    session.data_received(codec.seal(STARTUP) + codec.seal(KEEPALIVE))
    assert guard.questions == [(1, 1, True, 0)] and not transport.reading and transport.written == []
    session.data_received(codec.seal(KEEPALIVE))  # already in flight when reading paused
    guard.callbacks[0]((Verdict.ADMIT, 0))
    assert [codec.open(frame) for frame in transport.frames()] == [control.Ack()] * 3
    assert [u.trigger for u in store.updates] == [Trigger.STARTUP, Trigger.ALIVE, Trigger.ALIVE]
    assert transport.reading and len(guard.questions) == 1  # the rest was on the current connection


def test_the_events_back_pressure_does_not_let_a_waiting_connection_go_on_before_its_answer() -> None:
    remoted, guard, store = _worker()
    session, transport = _connect(remoted)
    codec = _codec()
    session.data_received(codec.seal(STARTUP) + codec.seal(KEEPALIVE))
    session.pause_reading()  # the event intake fills up meanwhile ...
    session.resume_reading()  # ... and drains: the verdict is still pending
    assert store.updates == [] and transport.written == [] and not transport.reading
    guard.callbacks[0]((Verdict.ADMIT, 0))
    assert [u.trigger for u in store.updates] == [Trigger.STARTUP, Trigger.ALIVE]
    assert transport.reading


def test_no_answer_closes_the_waiting_connection() -> None:
    remoted, guard, store = _worker()
    session, _ = _connect(remoted)
    session.data_received(_codec().seal(STARTUP))
    guard.callbacks[0](None)
    assert session.close_reason is CloseReason.REFUSED and store.updates == []


def test_an_answer_for_a_connection_that_closed_meanwhile_gives_the_admission_back() -> None:
    remoted, guard, store = _worker()
    session, _ = _connect(remoted)
    session.data_received(_codec().seal(STARTUP))
    session.connection_lost(None)
    guard.callbacks[0]((Verdict.ADMIT, 0))
    assert guard.unadmitted_agents == [1] and store.updates == []


def test_the_last_counter_is_told_before_the_connection_closes() -> None:
    remoted, guard, _ = _worker()
    session, _ = _connect(remoted)
    codec = _codec()
    session.data_received(codec.seal(STARTUP))
    guard.callbacks[0]((Verdict.ADMIT, 0))
    session.data_received(codec.seal(KEEPALIVE))
    remoted.housekeeping()
    remoted.housekeeping()
    assert guard.reported == [{1: 2}, {}]
    session.connection_lost(None)
    assert guard.closing_counters == [(1, 2)]


def test_a_connection_waiting_for_the_managers_answer_gets_the_questions_time_past_its_frame_timeout() -> (
    None
):
    remoted, guard, store = _worker()
    session, transport = _connect(remoted)
    codec = _codec()
    session.data_received(codec.seal(STARTUP))
    assert session.waiting and not session.authenticated
    frame_timeout = remoted.admission.frame_timeout
    remoted.admission.sweep(session.opened_at + frame_timeout + 1.0)  # the manager is slow, not the agent
    assert not session.closed
    guard.callbacks[0]((Verdict.ADMIT, 0))  # answered: bound, authenticated, its deadline gone
    assert session.authenticated and [codec.open(frame) for frame in transport.frames()] == [control.Ack()]
    remoted.admission.sweep(session.opened_at + frame_timeout + ADMIT_TIMEOUT + 1.0)
    assert not session.closed and [u.trigger for u in store.updates] == [Trigger.STARTUP]


def test_a_connection_whose_answer_never_comes_is_closed_after_the_questions_time() -> None:
    remoted, _, _ = _worker()
    session, _ = _connect(remoted)
    session.data_received(_codec().seal(STARTUP))
    deadline = session.opened_at + remoted.admission.frame_timeout + ADMIT_TIMEOUT
    remoted.admission.sweep(deadline - 0.5)
    assert not session.closed
    remoted.admission.sweep(deadline + 0.5)
    assert session.close_reason is CloseReason.FRAME_TIMEOUT
