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
