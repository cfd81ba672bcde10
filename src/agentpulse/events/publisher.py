"""Status events from the outbox to JetStream (`OutboxPublisher`), and the NATS link both publishers share.

`OutboxPublisher` is at-least-once and deduplicated by `Nats-Msg-Id` (keep-alive events, at-most-once and
batched, are `keepalives.KeepalivePublisher`'s). The danger is order: one agent's events are written one at
a time, each after JetStream acknowledged the one before (`ordered`), and the outbox is only ever
acknowledged as a prefix, so what is left after a failure is a suffix and each KV entry ends on the agent's
newest status (see `OutboxPublisher`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from agentpulse.backoff import SATURATED, backoff_delay
from agentpulse.events import payloads
from agentpulse.events.ordered import (
    Lane,
    Publisher,
    SubjectTips,
    Write,
    kv_entry_sequence,
    publish_in_order,
    status_event_sequence,
)
from agentpulse.events.pubacks import PubAcks
from agentpulse.jetstream import await_leaders, note_replicas
from agentpulse.store.facade import Store
from agentpulse.store.reader import Reader, ReadFailed

log = logging.getLogger(__name__)

OUTBOX_BATCH = 1000
OUTBOX_POLL = 1.0  # seconds between looks at the outbox when no commit woke us
ACK_TIMEOUT = 5.0  # for a whole batch's JetStream acks
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
DUPLICATE_WINDOW = 120.0  # seconds: JetStream drops a repeated Nats-Msg-Id within this window
KV_SUBJECT = "$KV.{bucket}.{key}"
# Told of each batch published: (seconds from the first publish to the last ack or flush, events sent)
PublishObserver = Callable[[float, int], None]


class NatsLink:
    """The NATS connection as the publishers see it. `epoch` changes on every (re)connect."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.js: JetStreamContext | None = None
        self.epoch = 0

    @property
    def up(self) -> bool:
        return self.js is not None and self.nc.is_connected


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    row_id: int
    subject: str
    msg_id: str
    payload: bytes

    @property
    def agent_and_seq(self) -> tuple[int, int] | None:
        """From our own msg id, `<%03d id>:<sequence>`; None for a row this version did not write."""
        return payloads.parse_status_msg_id(self.msg_id)


class Unavailable(Exception):
    """NATS cannot take the events now; the reason is for the one log line per state change."""


class OutboxReader:
    """Outbox reads on one dedicated thread, over the read-only connection it keeps (sqlite3 objects stay
    on the thread that made them; a PostgreSQL reader keeps one per thread too)."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader  # keep_open: opened once the store has global.db open
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="events-outbox")

    def _read(self, after: int, limit: int) -> list[OutboxEntry]:
        rows = self._reader.outbox_after(after, limit)
        return [OutboxEntry(row.row_id, row.subject, row.msg_id, row.payload) for row in rows]

    def _count(self, after: int) -> int:
        return self._reader.outbox_count(after)

    async def read(self, after: int, limit: int) -> list[OutboxEntry]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._read, after, limit)

    async def count(self, after: int) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._count, after)

    def _close(self) -> None:
        self._reader.close()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)


class OutboxPublisher:
    """Status events from `event_outbox` to JetStream: at-least-once, deduplicated.

    The store writes each transition's event to `event_outbox` in the transaction that changes the status,
    so the outbox holds exactly the events not yet acknowledged by JetStream. This reads it in id order, in
    batches, through the `OutboxReader` thread, publishes a batch with acks pipelined across agents and at
    most one write in flight per agent (`ordered.publish_in_order`: an agent's next event leaves once its
    previous one is acknowledged, expecting the stream sequence that one got), and has the store delete
    the rows JetStream acknowledged. Retries carry the same `Nats-Msg-Id`, so JetStream drops what it
    already has within the stream's duplicate window; after it, the expectation tells a write that is there.

    The danger is order. Within a subject nothing newer is stored while something older is missing (a
    NATS failover loses in-flight writes: only an agent's oldest unacknowledged one can be among them). Rows
    are only ever acknowledged as a prefix of the outbox (everything up to the first row that failed), so
    what is left after a failure, a crash or an outage is always a suffix: re-publishing it re-writes the KV
    snapshot oldest first and newest last, so each KV entry ends on the agent's newest status. Within a run
    the sequence each KV entry holds is remembered, so it never goes back. Rows JetStream accepted past the
    failed one are remembered too, so a retry does not publish them again.
    """

    def __init__(
        self,
        link: NatsLink,
        store: Store,
        reader: OutboxReader,
        *,
        prefix: str,
        stream: str,
        kv_bucket: str,
        batch: int = OUTBOX_BATCH,
        replicas: int = 1,
    ) -> None:
        self.link = link
        self.store = store
        self.reader = reader
        self.prefix = prefix
        self.stream = stream
        self.kv_bucket = kv_bucket
        self.batch = batch
        self.replicas = replicas  # for the stream and bucket this creates; an existing one keeps its own
        self.published = 0  # events acknowledged by JetStream in this run
        self.backlog_at_start = 0  # outbox rows left by the last run (set once by the service)
        self.committed = 0  # outbox rows committed in this run (writer thread)
        self.on_published: PublishObserver | None = None  # metrics: publish latency
        self.acks: Publisher = PubAcks(link.nc)  # not nats-py's publish_async: see pubacks.py
        self._acked_upto = 0  # every outbox id up to this one is acknowledged (ids only grow)
        self._in_stream: set[int] = set()  # accepted by JetStream, not yet acknowledged as a prefix
        self._kv_seq: dict[int, int] = {}  # the sequence of each agent's KV entry, as written by this run
        # Where each agent's subject ends in the stream and in the bucket's stream (ordered.py), as learned
        self._stream_tips = SubjectTips(stream, f"stream {stream}", status_event_sequence)
        self._kv_tips = SubjectTips(f"KV_{kv_bucket}", f"KV bucket {kv_bucket}", kv_entry_sequence)
        self._setup_epoch = -1
        self._replicas_noted: set[str] = set()  # what was said to differ from <replicas> (once each)
        self._wake = asyncio.Event()  # a commit added rows
        self._kick = asyncio.Event()  # the connection came (back)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._away_since: float | None = None
        self._state: str | None = None  # "up" or "away", for one log line per change
        # nats-py's publish swallows a cancellation (`_flush_pending` catches CancelledError), so a
        # cancelled task may go on: run() also ends when this is set.
        self.stopped = False
        # Several nodes share one PostgreSQL outbox: only the leader relays it (the manager sets this), so
        # one relay writes each KV entry, oldest first; the others' events wait for it.
        self.active: Callable[[], bool] = lambda: True

    # -- wake-ups --------------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_commit(self, count: int) -> None:
        """Writer thread: a commit inserted outbox rows."""
        self.committed += count
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._wake.set)

    def kick(self) -> None:
        """Loop side: the connection is (back) up; retry now rather than at the end of the back-off."""
        self._kick.set()
        self._wake.set()

    # -- the task --------------------------------------------------------------------------------------

    async def run(self) -> None:
        delay, failures = 0.0, 0
        while not self.stopped:
            if self.link.epoch == 0:
                # Never connected yet: the service logs why; nothing to retry before it connects.
                await self._kick.wait()
            event, timeout = (self._kick, delay) if self._state == "away" else (self._wake, OUTBOX_POLL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            self._wake.clear()
            self._kick.clear()
            if not self.active():
                continue
            try:
                await self.drain(until_stopped=True)
            except (Unavailable, ReadFailed) as why:
                # Set up again before the next try: the stream or the bucket may be what went away.
                self._setup_epoch = -1
                await self._went_away(
                    f"NATS is unavailable ({why})"
                    if isinstance(why, Unavailable)
                    else f"the database is unavailable (reading the outbox: {why})"
                )
                failures += 1
                delay = backoff_delay(failures, base=BACKOFF_MIN, cap=BACKOFF_MAX)
            except Exception:
                # A bug must not stop status events for good: report it, back off, try again.
                self._setup_epoch = -1
                log.exception("outbox publisher failed; retrying")
                await self._went_away("an unexpected error, see the traceback above")
                failures = SATURATED  # the longest wait, now and after each failure that follows
                delay = backoff_delay(failures, base=BACKOFF_MIN, cap=BACKOFF_MAX)
            else:
                delay, failures = 0.0, 0

    async def drain(self, *, until_stopped: bool = False) -> int:
        """Publish everything in the outbox, batch after batch (the task's drain also ends, between two
        batches, once `stopped`: the stop's own drain is bounded). Raises Unavailable at the first failure."""
        if not self.link.up:
            raise Unavailable("not connected")
        if self._setup_epoch != self.link.epoch:
            await self._setup()
            self._setup_epoch = self.link.epoch
        sent = 0
        while True:
            rows = await self.reader.read(self._acked_upto, self.batch)
            if rows:
                sent += await self._publish(rows)
            if len(rows) < self.batch:
                self._came_back(sent)
                return sent
            if until_stopped and (self.stopped or not self.active()):
                return sent  # a leader that stepped down leaves the rest to the next one

    @property
    def depth(self) -> int:
        """Outbox rows not yet acknowledged by JetStream, counted in memory (no query)."""
        return max(0, self.backlog_at_start + self.committed - self.published)

    # -- JetStream -------------------------------------------------------------------------------------

    async def _setup(self) -> None:
        """Create the stream and the KV bucket, or bring an existing stream to our subject and a window of
        at least DUPLICATE_WINDOW. Settings an operator gave an existing stream (limits, replicas, max age,
        a longer window) are kept.
        """
        js = self._js()
        subject = f"{self.prefix}.{payloads.STATUS_TOKEN}.>"
        try:
            try:
                info = await js.stream_info(self.stream)
            except NotFoundError:
                await js.add_stream(
                    js_api.StreamConfig(
                        name=self.stream,
                        subjects=[subject],
                        duplicate_window=DUPLICATE_WINDOW,
                        storage=js_api.StorageType.FILE,
                        num_replicas=self.replicas,
                        description="agentpulse status events (one per transition)",
                    )
                )
                log.info(
                    "Created JetStream stream %s (subjects %s, %d replicas)",
                    self.stream,
                    subject,
                    self.replicas,
                )
            else:
                config = info.config
                note_replicas(
                    self._replicas_noted, f"stream {self.stream}", config.num_replicas, self.replicas
                )
                subjects = list(config.subjects or [])
                window = max(config.duplicate_window or 0.0, DUPLICATE_WINDOW)  # a longer one only helps
                if subject not in subjects or config.duplicate_window != window:
                    if subject not in subjects:
                        subjects.append(subject)
                    await js.update_stream(config.evolve(subjects=subjects, duplicate_window=window))
                    log.info("Updated JetStream stream %s (subjects %s)", self.stream, ", ".join(subjects))
            try:
                await js.key_value(self.kv_bucket)
                bucket = await js.stream_info(f"KV_{self.kv_bucket}")
                note_replicas(
                    self._replicas_noted,
                    f"KV bucket {self.kv_bucket}",
                    bucket.config.num_replicas,
                    self.replicas,
                )
            except NotFoundError:
                await js.create_key_value(
                    bucket=self.kv_bucket, history=1, storage=js_api.StorageType.FILE, replicas=self.replicas
                )
                log.info("Created KV bucket %s (%d replicas)", self.kv_bucket, self.replicas)
            if self.replicas > 1:
                await await_leaders(js, (self.stream, f"KV_{self.kv_bucket}"))
        except (NatsError, OSError, TimeoutError) as error:
            raise Unavailable(
                f"cannot set up stream {self.stream} and KV bucket {self.kv_bucket}: {error!r}"
            ) from None

    def _js(self) -> JetStreamContext:
        js = self.link.js
        if js is None or not self.link.nc.is_connected:
            raise Unavailable("not connected")
        return js

    async def _publish(self, rows: list[OutboxEntry]) -> int:
        """Publish one batch, in order per agent (`ordered`); acknowledge the longest prefix that fully made it."""
        started = time.monotonic()
        failure = await publish_in_order(self._js(), self.acks, self._lanes(rows), ACK_TIMEOUT)
        if self.on_published is not None and failure is None:
            self.on_published(time.monotonic() - started, len(rows))
        done: list[int] = []
        for row in rows:
            ids = row.agent_and_seq
            kv_ok = ids is None or self._kv_seq.get(ids[0], 0) >= ids[1]
            if row.row_id not in self._in_stream or not kv_ok:
                break
            done.append(row.row_id)
        if done:
            self.store.ack_outbox(done)
            self._acked_upto = done[-1]
            self._in_stream.difference_update(done)
            self.published += len(done)
        if len(done) < len(rows):
            raise Unavailable(failure or "not every event was acknowledged")
        return len(done)

    def _lanes(self, rows: list[OutboxEntry]) -> list[Lane]:
        """One lane per agent of each row not yet in the stream, in outbox order; one per agent for the KV
        bucket, its newest row in the batch if the bucket may hold an older one."""
        stream: dict[int | str, Lane] = {}
        newest: dict[int, tuple[int, OutboxEntry]] = {}  # agent -> its newest row in the batch
        for row in rows:
            ids = row.agent_and_seq
            if row.row_id not in self._in_stream:
                key: int | str = ids[0] if ids is not None else row.subject
                lane = stream.get(key)
                if lane is None:
                    lane = stream[key] = Lane(self._stream_tips, key, self._in_stream_now)
                seq = ids[1] if ids is not None else None
                lane.writes.append(Write(row.subject, row.payload, seq, row.msg_id, row.row_id))
            if ids is not None:
                newest[ids[0]] = (ids[1], row)
        lanes = list(stream.values())
        for agent_id, (seq, row) in newest.items():
            if self._kv_seq.get(agent_id, 0) < seq:
                subject = KV_SUBJECT.format(bucket=self.kv_bucket, key=payloads.kv_key(agent_id))
                lane = Lane(self._kv_tips, agent_id, self._in_kv_now)
                lane.writes.append(Write(subject, row.payload, seq, key=agent_id))
                lanes.append(lane)
        return lanes

    def _in_stream_now(self, write: Write) -> None:
        self._in_stream.add(write.key)

    def _in_kv_now(self, write: Write) -> None:
        if write.seq is not None:
            self._kv_seq[write.key] = max(write.seq, self._kv_seq.get(write.key, 0))

    # -- one log line per state change ---------------------------------------------------------------

    async def _went_away(self, why: str) -> None:
        if self._state == "away":
            log.debug("status events still held: %s", why)
            return
        self._state = "away"
        self._away_since = time.monotonic()
        try:
            pending = await self.reader.count(self._acked_upto)
        except ReadFailed:
            pending = -1
        log.warning(
            "Status events held in the outbox: %s; %s pending, retrying with back-off up to %.0f s",
            why,
            pending if pending >= 0 else "some",
            BACKOFF_MAX,
        )

    def _came_back(self, sent: int) -> None:
        if self._state == "up":
            return
        if self._state == "away" and self._away_since is not None:
            log.info(
                "Status events flowing again to stream %s: %d held events sent after %.1f s",
                self.stream,
                sent,
                time.monotonic() - self._away_since,
            )
        else:
            log.info(
                "Status events: publishing to JetStream stream %s and KV bucket %s",
                self.stream,
                self.kv_bucket,
            )
        self._state = "up"
        self._away_since = None
