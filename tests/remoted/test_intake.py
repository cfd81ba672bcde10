"""The intake's back-pressure: past the high-water mark the biggest senders are paused first, an agent
that sends no events never is, a full spool pauses whoever sends, and below the low-water mark all read
again (frames read meanwhile are handled then, in order)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentpulse.config import AgentEventsConfig, NatsConfig
from agentpulse.ingest.publisher import EventPublisher
from agentpulse.paths import Home
from agentpulse.remoted.intake import EventIntake
from agentpulse.remoted.session import Session
from agentpulse.wire.keys import parse_line


class Transport:
    """Just what a session calls on its asyncio transport."""

    def __init__(self) -> None:
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None


class Dispatcher:
    def __init__(self) -> None:
        self.handled: list[bytes] = []

    def monotonic(self) -> float:
        return 0.0

    def handle(self, data: bytes, peer_ip: str, session: object, udp_peer: object = None) -> None:
        self.handled.append(data)

    def session_opened(self, session: Session) -> None: ...


def session() -> tuple[Session, Transport]:
    transport = Transport()
    made = Session(Dispatcher())  # type: ignore[arg-type]
    made.connection_made(transport)  # type: ignore[arg-type]
    return made, transport


KEY = parse_line("001 web-01 any 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")


def test_biggest_senders_first_quiet_agents_never(tmp_path: Path) -> None:
    events = AgentEventsConfig(spool_max_bytes=256 << 10)
    publisher = EventPublisher(NatsConfig(enabled=True, agent_events=events), Home(tmp_path), 0, 1)
    intake = EventIntake(events, "agent", "node01", publisher, None)
    (big, big_t), (small, small_t), (_quiet, quiet_t) = session(), session(), session()
    assert KEY is not None
    counters = iter(range(1, 10_000))
    for _ in range(70):  # ~195 KB of spool from one agent, ~40 KB from another: past 75 % of 256 KiB
        intake.accept(KEY, b"1:/var/log/big:" + b"x" * 1200, (1, next(counters)), 0.0, 0.0, big)
        intake.accept(KEY, b"1:/var/log/small:" + b"y" * 100, (1, next(counters)), 0.0, 0.0, small)
    assert not (big_t.paused or small_t.paused)
    intake.tick(1000.0)
    assert big_t.paused and not small_t.paused and not quiet_t.paused
    while not publisher.full:  # the small sender fills it: the event that finds it full pauses it
        intake.accept(KEY, b"1:/var/log/small:" + b"y" * 1000, (1, next(counters)), 0.0, 0.0, small)
    assert small_t.paused and not quiet_t.paused
    held, due = intake.tick(1001.0)
    assert set(held) == {big, small}, (held, big, small)
    assert set(due) == {small}  # big was acked on its behalf at the last tick, small is due now
    big.data_received(b"")  # nothing new; frames that arrive while paused are held, handled on resume
    publisher._buffer.clear()
    publisher._buffered = 0
    intake.tick(1002.0)
    assert not (big_t.paused or small_t.paused)
    asyncio.run(asyncio.sleep(0))


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_events_past_the_loop_budget_pause_their_connection_until_a_later_iteration(
    tmp_path: Path,
) -> None:
    """One iteration: the first events take 12 ms, so the connection whose event comes after waits, the
    frames it had read held; a later iteration resumes it and handles them in order."""
    events = AgentEventsConfig()
    publisher = EventPublisher(NatsConfig(enabled=True, agent_events=events), Home(tmp_path), 0, 1)
    intake = EventIntake(events, "agent", "node01", publisher, None)
    clock = Clock()
    intake.monotonic = clock
    assert KEY is not None
    (first, first_t), (late, late_t) = session(), session()

    async def iteration() -> None:
        intake._loop = asyncio.get_running_loop()
        intake.accept(KEY, b"1:/var/log/a:one", (1, 1), 0.0, clock.now, first)
        clock.now += 0.012  # the events so far took 12 ms of the iteration
        intake.accept(KEY, b"1:/var/log/a:two", (1, 2), 0.0, clock.now, first)
        assert first_t.paused and not late_t.paused
        late.pause_reading()  # a paused connection's frames read meanwhile are held, in order
        assert late.held == []
        late.resume_reading()
        assert first.held == [] and intake.budget.waiting == 1
        first.held.extend([b"frame-3", b"frame-4"])
        await asyncio.sleep(0)  # the iteration ends (its flush), a later one resumes the waiting
        await asyncio.sleep(0)
        assert not first_t.paused and intake.budget.waiting == 0
        dispatcher = first.dispatcher
        assert dispatcher.handled == [b"frame-3", b"frame-4"]  # type: ignore[attr-defined]
        assert intake.counters.load_pauses == 1 and intake.counters.pauses == 0

    asyncio.run(iteration())


def test_a_connection_that_sends_only_keepalives_is_never_paused_by_the_budget() -> None:
    """Only an accepted event can pause: the dispatcher handles keep-alives without the intake."""
    events = AgentEventsConfig()
    intake = EventIntake(events, "agent", "node01", None, None)
    busy, busy_t = session()
    _quiet, quiet_t = session()
    assert KEY is not None

    async def iteration() -> None:
        intake._loop = asyncio.get_running_loop()
        intake.accept(KEY, b"1:/var/log/a:x", (1, 1), 0.0, 50.0, busy)
        intake.accept(KEY, b"1:/var/log/a:y", (1, 2), 0.0, 51.0, busy)
        assert busy_t.paused  # the events took a second of the iteration
        assert not quiet_t.paused and intake.budget.waiting == 1

    asyncio.run(iteration())


def test_frames_held_by_a_pause_are_handled_when_the_connection_closes() -> None:
    """What a paused connection had read is the agent's, sent and gone from its buffer: neither a close
    of ours nor the peer's loses it."""
    from agentpulse.remoted.session import CloseReason

    for close in ("ours", "peer's"):
        made, transport = session()
        transport.close = lambda: None  # type: ignore[attr-defined]
        made.pause_reading()
        made.held.extend([b"event-1", b"event-2"])  # type: ignore[union-attr]
        if close == "ours":
            made.close(CloseReason.MANAGER_STOPPING)
        else:
            made.dispatcher.session_closed = lambda s: None  # type: ignore[method-assign]
            made.connection_lost(None)
        assert made.dispatcher.handled == [b"event-1", b"event-2"], close  # type: ignore[attr-defined]
        assert made.held is None and made.closed


def test_an_iteration_of_events_that_are_not_queued_still_ends_the_budget() -> None:
    """Events that are accepted but never queued (a `keepalive` location, or dropped) must still end the
    iteration's budget: else the next iteration's first event is "over" and its connection waits for a
    resume round nobody schedules."""
    events = AgentEventsConfig()
    intake = EventIntake(events, "agent", "node01", None, None)
    (first, _), (later, later_t) = session(), session()
    assert KEY is not None

    async def iterations() -> None:
        intake._loop = asyncio.get_running_loop()
        intake.accept(KEY, b"1:keepalive:ignored", (1, 1), 0.0, 50.0, first)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        intake.accept(KEY, b"1:/var/log/a:x", (1, 2), 0.0, 51.0, later)  # a second later: a new iteration
        assert not later_t.paused and intake.budget.waiting == 0

    asyncio.run(iterations())
