"""Keep-alive events from memory to core NATS: `KeepalivePublisher`, at-most-once and batched.

The danger is a NATS that lags: a batch is sent only once the last one's flush came back, and meanwhile
the keep-alives coalesce per agent, so a slow NATS costs one event per agent, never a growing queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from agentpulse.events import payloads
from agentpulse.events.publisher import NatsLink, PublishObserver, Unavailable
from agentpulse.status import ConnectionStatus, Trigger, transition
from agentpulse.wire.control import Keepalive

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 0.05
KEEPALIVE_BUFFER_MAX = 500_000  # events waiting for the next batch; beyond that they are dropped
FLUSH_TIMEOUT = 2  # seconds a batch waits for its flush before the next batch coalesces behind it
# nats-py (2.16 included) resolves the oldest PING's future on every PONG without checking whether it was
# cancelled: a flush that timed out leaves a cancelled future there, and its late PONG raises
# InvalidStateError in the client's read loop, which stops (nats-py issue 624 family). So a flush is never
# cancelled while it can still get its PONG: it is asked to wait a day, and we stop waiting for it instead.
FLUSH_NEVER = 86_400  # seconds (nats-py wants an int)


class KeepalivePublisher:
    """Keep-alive events: one cheap store per keep-alive on the loop, one batch per interval on core NATS.

    At-most-once: appended to a list on the loop (the store calls us for every keep-alive), published every
    `KEEPALIVE_INTERVAL` as one batch, then flushed. While a flush has not come back (NATS lags) no batch
    is sent and keep-alives coalesce per agent, so a slow NATS costs one event per agent, not a growing
    queue (`coalesced` counts the events replaced; each event's `sequence` shows
    the gap). While NATS is away they are counted and dropped: a keep-alive is stale a minute later, and
    the status stream already says whether the agent lives.
    """

    def __init__(
        self,
        link: NatsLink,
        *,
        prefix: str,
        origin: payloads.Origin,
        run: int,
        name_of: Callable[[int], str | None],
        status_of: Callable[[int], ConnectionStatus],
        interval: float = KEEPALIVE_INTERVAL,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.origin = origin
        self.run_id = run
        self.name_of = name_of
        self.status_of = status_of
        self.interval = interval
        self.published = 0
        self.dropped = 0
        self.on_published: PublishObserver | None = None  # metrics: publish latency
        self.coalesced = 0  # events replaced by a newer one of the same agent before they were sent
        self._dropped_checked = 0
        self._drops_before = 0
        self._dropping = False
        self._buffer: list[payloads.KeepaliveFacts] = []
        self._held: dict[int, payloads.KeepaliveFacts] = {}  # while NATS lags: each agent's newest only
        self._coalescing = False
        self._sequences: dict[int, int] = {}
        self._flushing: asyncio.Task[None] | None = None  # never cancelled while connected (see FLUSH_NEVER)
        self._flushing_epoch = 0
        self.stopped = False  # run() ends when set (a cancellation may be swallowed by nats-py's publish)

    def on_keepalive(self, agent_id: int, at: float, keepalive: Keepalive) -> None:
        """Store listener, on the loop: count the keep-alive and queue its event.

        The store calls listeners before it applies the keep-alive, so the status reported is the one the
        status model says the keep-alive leads to (the event must not show a later shutdown's status).
        """
        sequence = self._sequences.get(agent_id, 0) + 1
        self._sequences[agent_id] = sequence
        if not self.link.up or len(self._buffer) + len(self._held) >= KEEPALIVE_BUFFER_MAX:
            self.dropped += 1
            return
        current = self.status_of(agent_id)
        moved = transition(current, Trigger.ALIVE)
        status = current if moved is None else moved.new
        facts = payloads.KeepaliveFacts(agent_id, at, sequence, status, keepalive.agent_ip, keepalive.version)
        if self._coalescing:
            if agent_id in self._held:
                self.coalesced += 1
            self._held[agent_id] = facts
        else:
            self._buffer.append(facts)

    async def run(self) -> None:
        while not self.stopped:
            await asyncio.sleep(self.interval)
            if self.stopped:
                return
            try:
                await self.flush()
            except Exception:
                log.exception("keep-alive events publisher failed; going on")  # at-most-once: drop, continue

    async def flush(self) -> None:
        if self._lagging():
            self._coalescing = True  # the last batch's flush is not back: hold one event per agent
            self._note_drops()
            return
        batch, self._buffer = self._buffer, []
        if self._held:
            batch.extend(self._held.values())  # each newer than any of its agent's in the list
            self._held = {}
        self._coalescing = False
        if batch:
            await self._send(batch)
        self._note_drops()

    def _lagging(self) -> bool:
        """True while the last flush is out and can still get its PONG (same connection)."""
        task = self._flushing
        if task is None or task.done():
            return False
        if self._flushing_epoch != self.link.epoch or not self.link.up:
            # nats-py forgot that PING when the connection went: nothing can resolve it any more, so
            # cancelling it is safe.
            task.cancel()
            self._flushing = None
            return False
        return True

    async def _send(self, batch: list[payloads.KeepaliveFacts]) -> None:
        nc = self.link.nc
        sent = 0
        started = time.monotonic()
        try:
            if not self.link.up:
                raise Unavailable("not connected")
            for facts in batch:
                body = payloads.keepalive_event(facts, self.name_of(facts.agent_id), self.run_id, self.origin)
                await nc.publish(payloads.keepalive_subject(self.prefix, facts.agent_id), body)
                sent += 1
            self._flushing = asyncio.ensure_future(self._flush_once(nc))
            self._flushing_epoch = self.link.epoch
            # Wait for it, bounded, without cancelling it (asyncio.wait, not wait_for).
            await asyncio.wait((self._flushing,), timeout=FLUSH_TIMEOUT)
            if self.on_published is not None and self._flushing.done():
                self.on_published(time.monotonic() - started, sent)
        except (Unavailable, NatsError, OSError, TimeoutError):
            self.dropped += len(batch) - sent
        self.published += sent

    @staticmethod
    async def _flush_once(nc: NATS) -> None:
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.flush(FLUSH_NEVER)

    def close(self) -> None:
        """After the connection closed: a flush still out can no longer be answered."""
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None

    def _note_drops(self) -> None:
        """One warning when keep-alive events start being dropped, one when they flow again."""
        new = self.dropped - self._dropped_checked
        self._dropped_checked = self.dropped
        if new and not self._dropping:
            self._dropping = True
            self._drops_before = self.dropped - new
            log.warning("Keep-alive events dropped: NATS is unavailable (they are at-most-once by design)")
        elif not new and self._dropping and self.link.up:
            self._dropping = False
            log.info(
                "Keep-alive events flowing again; %d dropped while NATS was unavailable",
                self.dropped - self._drops_before,
            )
