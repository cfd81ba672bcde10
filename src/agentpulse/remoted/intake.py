"""`EventIntake`: what remoted does with an agent event, and the back-pressure on the agents that send them.

Each event is accepted (or refused) as it is read, and built (`ingest.event`) at the end of the loop
iteration that read it, all of that iteration's events together, for the analysisd sink if any and for
this process's `EventPublisher`, whose spool is bounded. So a keep-alive read in the same iteration as
many events is acknowledged (the ack is written as the keep-alive is handled) before any of those events
costs more than its decryption. The danger is that spool: when it fills (NATS away or slow),
reading stops on the sockets of the agents that send events, the biggest senders first, so their own
`client_buffer` holds the events; an agent that sends only keep-alives is never paused. A paused agent is
alive by our own doing: `keepalive_due()` names it every `PAUSED_KEEPALIVE` seconds, and remoted then
acks it and tells the store it is alive, so nothing probes it, sweeps it or changes its status. The
per-agent rate limit (`max_eps_per_agent`) pauses reading the same way, for as long as the excess takes,
and so does the loop budget (`congestion.py`): events take at most 10 ms of a loop iteration, the
connection whose event crosses that waits for a later one, so keep-alives are read and acked on time
even when more events are offered than the core can handle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Final

from agentpulse.config import AgentEventsConfig, Config
from agentpulse.ingest.analysisd import AnalysisdSink
from agentpulse.ingest.event import Source, build_record, is_keepalive_location, split, wazuh_line
from agentpulse.ingest.publisher import EventCounters, EventPublisher
from agentpulse.paths import Home
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.remoted.congestion import LoopBudget
from agentpulse.remoted.session import Session
from agentpulse.wire.keys import AgentKey

log = logging.getLogger(__name__)

HIGH_WATER: Final = 0.75  # past this share of the limit the biggest senders are paused
LOW_WATER: Final = 0.5  # below it every agent paused for the spool reads again
BIGGEST_SHARE: Final = 0.5  # at HIGH_WATER pause the top senders until they make this share of the bytes
PAUSED_KEEPALIVE: Final = 10.0  # seconds between acks and "alive" on behalf of a paused agent
ALIVE_INTERVAL: Final = 1.0  # an agent's events tell the store it is alive at most this often


def reserved_size(payload: bytes) -> int:
    """What an event will take in the spool, over-estimated: its text goes in twice, JSON-escaped."""
    return (len(payload) * 5 >> 1) + 512


class Pause(Enum):
    SPOOL = "spool full"
    RATE = "max_eps_per_agent"
    LOAD = "loop budget"


class EventIntake:
    def __init__(
        self,
        config: AgentEventsConfig,
        prefix: str,
        node: str,
        publisher: EventPublisher | None,
        sink: AnalysisdSink | None,
    ) -> None:
        self.config = config
        self.prefix = prefix
        self.node = node
        self.publisher = publisher
        self.sink = sink
        self.counters = publisher.counters if publisher is not None else EventCounters()
        self.eps = config.max_eps_per_agent
        self._sources: dict[int, tuple[AgentKey, Source]] = {}
        self._paused: dict[Session, set[Pause]] = {}
        self._kept_alive: dict[Session, float] = {}  # spool-paused session -> last ack on its behalf
        self._recent: dict[Session, int] = {}  # event bytes per session since the last tick
        self._buckets: dict[int, list[float]] = {}  # agent -> [tokens, monotonic of the last refill]
        self._alive_at: dict[int, float] = {}
        self._warn = RateLimitedLog(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Accepted this loop iteration, built at its end: (source, payload, received, counters, publish).
        self._pending: list[tuple[Source, bytes, float, tuple[int, int], bool]] = []
        self._reserved = 0
        self._flush_scheduled = False
        self.budget: LoopBudget[Session] = LoopBudget()
        self._round_scheduled = False
        self._now = 0.0  # monotonic, of the last event accepted
        self.monotonic: Callable[[], float] = time.monotonic

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.publisher is not None:
            self.publisher.on_acked = self._acked
            await self.publisher.start()

    async def stop(self) -> None:
        self._flush()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.sink is not None:
            self.sink.close()

    def source(self, key: AgentKey) -> Source:
        cached = self._sources.get(key.number)
        if cached is not None and cached[0] is key:
            return cached[1]
        source = Source(key.number, key.name, key.ip.text, self.node)
        self._sources[key.number] = (key, source)
        return source

    # -- the hot path -----------------------------------------------------------------------------------

    def accept(
        self,
        key: AgentKey,
        payload: bytes,
        counters: tuple[int, int],
        now: float,
        monotonic: float,
        session: Session | None,
    ) -> bool:
        """One event read from an agent. True when the store should hear the agent is alive now."""
        self._now = monotonic
        if session is not None and self._loop is not None:
            budget = self.budget
            if budget.started < 0:
                budget.start(monotonic)
                # The iteration's end (`_flush`) ends the budget too, whether or not this event is queued
                # (a dropped one, a `keepalive` location): else the next iteration would start "over".
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.call_soon(self._flush)
            elif budget.over(monotonic) and budget.wait(session):
                self.pause(session, Pause.LOAD)
        if is_keepalive_location(payload):
            self.counters.ignored_keepalive += 1
            return False
        publisher = self.publisher
        if publisher is None:
            self._queue(self.source(key), payload, now, counters, False)
        else:
            # TCP: at most the one event that finds the spool full per connection, then it is paused.
            # UDP cannot be paused: past the hard limit its events are dropped, counted.
            if publisher.full and (
                self.config.drop_when_full or (session is None and publisher.over_hard_limit)
            ):
                self._drop(key)
                if self.sink is not None:  # the sink is best effort, and not the spool's business
                    self._queue(self.source(key), payload, now, counters, False)
            else:
                self._queue(self.source(key), payload, now, counters, True)
                if session is not None:
                    self._recent[session] = self._recent.get(session, 0) + len(payload)
                    if publisher.full and not self.config.drop_when_full:
                        self.pause(session, Pause.SPOOL)
        if self.eps and session is not None:
            self._limit_rate(key.number, session, monotonic)
        last = self._alive_at.get(key.number, -ALIVE_INTERVAL)
        if monotonic - last >= ALIVE_INTERVAL:
            self._alive_at[key.number] = monotonic
            return True
        return False

    def _queue(
        self, source: Source, payload: bytes, now: float, counters: tuple[int, int], publish: bool
    ) -> None:
        if publish:
            size = reserved_size(payload)
            self._reserved += size
            assert self.publisher is not None
            self.publisher.reserve(size)
        self._pending.append((source, payload, now, counters, publish))
        if not self._flush_scheduled:
            if self._loop is None:  # not started (tests that drive the intake by hand): at once
                self._flush()
            else:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """The end of the loop iteration: build what it accepted, to the sink and to the spool."""
        self._flush_scheduled = False
        self.budget.end()
        if self.budget.waiting and not self._round_scheduled and self._loop is not None:
            self._round_scheduled = True
            self._loop.call_soon(self._resume_round)
        pending, self._pending = self._pending, []
        reserved, self._reserved = self._reserved, 0
        if not pending:
            return
        sink = self.sink
        if sink is not None:
            for source, payload, _, _, _ in pending:
                parts = split(payload)
                if parts is not None:
                    sink.send(wazuh_line(parts[0], source, parts[1], parts[2]))
        if self.publisher is not None:
            prefix = self.prefix
            try:
                records = [
                    build_record(prefix, source, payload, now, counters)
                    for source, payload, now, counters, publish in pending
                    if publish
                ]
            except Exception:  # a bug, not the agent's doing: lose the one event, not the iteration's
                records = self._build_each(pending)
            self.publisher.spool_now(records, reserved)

    def _build_each(self, pending: list[tuple[Source, bytes, float, tuple[int, int], bool]]) -> list[bytes]:
        records = []
        for source, payload, now, counters, publish in pending:
            if publish:
                try:
                    records.append(build_record(self.prefix, source, payload, now, counters))
                except Exception:
                    self.counters.dropped += 1
                    log.exception("Agent event of agent %s could not be built; dropped", source.id_text)
        return records

    def _drop(self, key: AgentKey) -> None:
        self.counters.dropped += 1
        why = (
            "drop_when_full is yes"
            if self.config.drop_when_full
            else "past the hard limit (UDP cannot be paused)"
        )
        self._warn.warning(
            "events-dropped",
            "Agent events dropped: the spool is full (%s); %d dropped so far (last from agent %s)",
            why,
            self.counters.dropped,
            key.id,
        )

    def _limit_rate(self, agent_id: int, session: Session, monotonic: float) -> None:
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            bucket = self._buckets[agent_id] = [self.eps, monotonic]
        tokens = min(self.eps, bucket[0] + (monotonic - bucket[1]) * self.eps) - 1.0
        bucket[0], bucket[1] = tokens, monotonic
        if tokens < 0 and self._loop is not None and Pause.RATE not in self._paused.get(session, ()):
            self.counters.rate_limited += 1
            self.pause(session, Pause.RATE)
            self._loop.call_later(-tokens / self.eps, self.resume, session, Pause.RATE)

    # -- pausing ----------------------------------------------------------------------------------------

    def pause(self, session: Session, reason: Pause) -> None:
        if session.closed or session.transport is None:
            return
        reasons = self._paused.get(session)
        if reasons is None:
            reasons = self._paused[session] = set()
            session.pause_reading()
        if reason is Pause.LOAD:
            self.counters.load_pauses = self.budget.pauses  # the budget counts them; the state file shows it
            # Paused for milliseconds, as a rule: acked on its behalf only if it lasts PAUSED_KEEPALIVE.
            self._kept_alive.setdefault(session, self._now)
        else:
            if not reasons or reasons == {Pause.LOAD}:
                self.counters.pauses += 1
            self._kept_alive.setdefault(session, -1.0)
        reasons.add(reason)

    def resume(self, session: Session, reason: Pause) -> None:
        reasons = self._paused.get(session)
        if reasons is None:
            return
        reasons.discard(reason)
        if not reasons:
            del self._paused[session]
            self._kept_alive.pop(session, None)
            session.resume_reading()

    def _resume_round(self) -> None:
        """A later iteration: resume the connections paused for the loop budget, longest waiting first,
        until their held events have taken the budget (the one that crosses it waits again, last)."""
        self._round_scheduled = False
        budget = self.budget
        clock = self.monotonic
        budget.start(clock())
        for _ in range(budget.waiting):
            if budget.over(clock()):
                break
            session = budget.next_due()
            if session is None:
                break
            self.resume(session, Pause.LOAD)
        if not self._flush_scheduled:  # no held event was handled: nothing else ends the round
            self.budget.end()
            if budget.waiting and self._loop is not None:
                self._round_scheduled = True
                self._loop.call_soon(self._resume_round)

    def _acked(self) -> None:
        """The spool shrank: below LOW_WATER every agent paused for it reads again, at once."""
        if self._kept_alive and self.publisher is not None and self.publisher.level() < LOW_WATER:
            for session in [s for s, reasons in self._paused.items() if Pause.SPOOL in reasons]:
                self.resume(session, Pause.SPOOL)

    def closed(self, session: Session) -> None:
        self.budget.forget(session)
        self._paused.pop(session, None)
        self._kept_alive.pop(session, None)
        self._recent.pop(session, None)

    def is_paused(self, session: Session) -> bool:
        return session in self._paused

    def tick(self, monotonic: float) -> tuple[list[Session], list[Session]]:
        """Once a second: pause the biggest senders past HIGH_WATER, resume everyone below LOW_WATER.
        Returns (every paused session, those due an ack and an "alive" on their behalf)."""
        publisher = self.publisher
        recent, self._recent = self._recent, {}
        if publisher is not None:
            level = publisher.level()
            if level >= HIGH_WATER and recent and not self.config.drop_when_full:
                total = sum(recent.values())
                taken = 0
                for session, sent in sorted(recent.items(), key=lambda item: -item[1]):
                    if taken >= total * BIGGEST_SHARE:
                        break
                    self.pause(session, Pause.SPOOL)
                    taken += sent
            elif level < LOW_WATER:
                self._acked()
        self.counters.paused_now = len(self._paused)
        if self.sink is not None:
            self.counters.analysisd_lost = self.sink.lost
        held, due = [], []
        for session, at in self._kept_alive.items():
            if session.closed:
                continue
            held.append(session)
            if monotonic - at >= PAUSED_KEEPALIVE:
                self._kept_alive[session] = monotonic
                due.append(session)
        return held, due


def build_intake(config: Config, home: Home, index: int, processes: int) -> EventIntake | None:
    """The intake of remoted process `index` of `processes`; None when agent events go nowhere (no NATS
    and no analysisd socket): they are then only counted, as before."""
    events = config.nats.agent_events
    if not events.enabled:
        return None
    publisher = EventPublisher(config.nats, home, index, processes) if config.nats.enabled else None
    sink = AnalysisdSink(events.analysisd_socket) if events.analysisd_socket else None
    if publisher is None and sink is None:
        return None
    return EventIntake(events, config.nats.subject_prefix, config.global_.node_name, publisher, sink)
