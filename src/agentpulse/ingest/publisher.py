"""`EventPublisher`: one remoted process's agent events, spooled to disk, then to JetStream in order.

Each remoted process (the manager with one worker, else every worker) publishes its own agents' events on
its own NATS connection: events never cross the record pipe, and the spool is per process
(`queue/events/<index>/`), so no lock is shared. The hot path (`submit`) appends to a list; once per loop
iteration the list goes to the spool in one write, and the pump task publishes from the spool with
pipelined JetStream acks and moves the cursor past every fully acknowledged batch. The danger is a NATS
that is away or slow: then the spool grows, and `full` tells remoted to stop reading the senders.

A spooled record is already the NATS protocol message (`event.wire_record`), so a batch goes to nats-py's
pending buffer as one joined buffer (its `_send_command`: nats-py has no public call for bytes already
framed; without it each event would cost a `publish()` call, about as much as building it), and only the
batch's last event goes through `publish_async`, for its acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from agentpulse.backoff import backoff_delay
from agentpulse.config import NatsConfig
from agentpulse.ingest.event import EVENTS_TOKEN, MSG_ID_HEADER, WIRE_MARK, decode_record, wire_record
from agentpulse.ingest.spool import Position, Spool
from agentpulse.jetstream import await_leaders, note_replicas
from agentpulse.paths import Home

log = logging.getLogger(__name__)

BATCH: Final = 256  # records per publish batch (one JetStream acknowledgement each)
WINDOW: Final = 16  # batches whose acks may be outstanding at once (4,096 events)
ACK_TIMEOUT: Final = 10.0
BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 10.0
STATE_INTERVAL: Final = 1.0
FINAL_DRAIN: Final = 3.0
STOP_TIMEOUT: Final = 5.0  # for the tasks, then the NATS connection, to end at a stop
RECONNECT_TIME_WAIT: Final = 1
SEGMENT_MAX: Final = 16 << 20
SLACK_MIN: Final = 1 << 20


class Unavailable(Exception):
    """NATS cannot take the events now: they stay in the spool and are retried."""


@dataclass(slots=True)
class EventCounters:
    """What `agentpulse status` shows for one remoted process (written to `queue/events/<index>.state`)."""

    received: int = 0
    published: int = 0
    spooled_bytes: int = 0
    spool_limit: int = 0
    dropped: int = 0  # drop_when_full, or past the hard cap (UDP cannot be paused)
    ignored_keepalive: int = 0  # location `keepalive...`, dropped by Wazuh's remoted too
    paused_now: int = 0
    pauses: int = 0
    rate_limited: int = 0
    load_pauses: int = 0  # connections paused for the loop budget (remoted/congestion.py), over the run
    analysisd_lost: int = 0
    nats: str = "connecting"
    updated: float = 0.0


def nats_options(config: NatsConfig) -> dict[str, Any]:
    """Credentials and TLS for nats-py, from `<nats>` (the events service reads the same options)."""
    options: dict[str, Any] = {"name": "agentpulse-events", "connect_timeout": 5}
    if config.user is not None:
        options["user"], options["password"] = config.user, config.password
    if config.token is not None:
        options["token"] = config.token
    if config.creds_file is not None:
        options["user_credentials"] = config.creds_file
    if config.tls_ca or config.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls_ca)
        if config.tls_cert and config.tls_key:
            context.load_cert_chain(config.tls_cert, config.tls_key)
        options["tls"] = context
    return options


def spool_dirs(root: Path, index: int, processes: int) -> list[Path]:
    """This process's spool, after those left by a run with another process layout.

    The processes are numbered 0 (remoted inside the manager) or 1..n (workers); a folder of any other
    number goes to the process of its number modulo the count, which publishes it first, then removes it.
    """
    current = [0] if processes == 1 and index == 0 else list(range(1, processes + 1))
    slot = current.index(index) if index in current else 0
    found = (
        sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        if root.exists()
        else []
    )
    orphans = [root / str(i) for i in found if i not in current and i % len(current) == slot]
    return [*orphans, root / str(index)]


class EventPublisher:
    def __init__(self, config: NatsConfig, home: Home, index: int, processes: int) -> None:
        self.config = config
        self.events = config.agent_events
        self.prefix = config.subject_prefix
        self.home = home
        self.index = index
        self.root = home.events_spool_dir
        self.state_path = self.root / f"{index}.state"
        self.limit = max(self.events.spool_max_bytes // max(processes, 1), 64 << 10)
        self.hard_limit = self.limit + max(self.limit // 8, SLACK_MIN)
        self.segment_bytes = max(min(SEGMENT_MAX, self.limit // 8), 16 << 10)
        self.spools = [Spool(path, self.segment_bytes) for path in spool_dirs(self.root, index, processes)]
        self.own = self.spools[-1]
        self.counters = EventCounters(spool_limit=self.limit)
        self.nc = NATS()
        # One JetStream context for the connection's life: each context subscribes its own reply inbox
        # at its first publish_async, so a context per drain would leave a subscription behind each time.
        self.js = self.nc.jetstream()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False
        self._setup_done = False
        self._replicas_noted: set[str] = set()  # said to differ from <replicas>, once each (jetstream.py)
        self._stopping = False  # the loops end when set (a cancellation can be missed, see `stop`)
        # Called after an acknowledged batch leaves the spool (remoted resumes paused senders from it).
        self.on_acked: Callable[[], None] | None = None

    # -- the hot path -----------------------------------------------------------------------------------

    def submit(self, record: bytes) -> None:
        """Queue one spool record; it reaches the disk at the end of this loop iteration."""
        self._buffer.append(record)
        self._buffered += len(record) + 8
        self.counters.received += 1
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def reserve(self, size: int) -> None:
        """Count `size` bytes of events accepted but not built yet (the intake builds them at the end of
        the loop iteration) toward the limit, so `full` sees them."""
        self._buffered += size

    def spool_now(self, records: list[bytes], reserved: int) -> None:
        """The records built at the end of a loop iteration (their `reserve`d estimate was `reserved`):
        to the spool in one write with whatever `submit` queued, and wake the pump."""
        self._buffer += records
        self._buffered += sum(map(len, records)) + 8 * len(records) - reserved
        self.counters.received += len(records)
        self._flush()

    @property
    def pending_bytes(self) -> int:
        spools = self.spools  # read for every event (`full`): one spool but after a layout change
        spooled = spools[0].pending_bytes if len(spools) == 1 else sum(s.pending_bytes for s in spools)
        return spooled + self._buffered

    @property
    def full(self) -> bool:
        return self.pending_bytes >= self.limit

    @property
    def over_hard_limit(self) -> bool:
        return self.pending_bytes >= self.hard_limit

    def level(self) -> float:
        return self.pending_bytes / self.limit

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._buffer or not self._ready:
            return
        batch, self._buffer, self._buffered = self._buffer, [], 0
        self.own.append(batch)
        self._wake.set()

    # -- start and stop ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spools (what a previous run left is published first) and start connecting."""
        self._loop = asyncio.get_running_loop()
        left = 0
        for spool in self.spools:
            left += await asyncio.to_thread(spool.open)
        self._ready = True
        if left:
            log.info("Agent events: %d bytes left in the spool by the last run, published first", left)
        self._flush()
        self._tasks = [
            asyncio.create_task(self._connect(), name="agent-events-connect"),
            asyncio.create_task(self._pump(), name="agent-events-pump"),
            asyncio.create_task(self._state_writer(), name="agent-events-state"),
        ]

    async def stop(self) -> None:
        """Spool what is buffered; give NATS a moment to take the rest; close. Nothing is lost either way."""
        self._flush()
        if self.nc.is_connected and any(spool.pending_bytes for spool in self.spools):
            deadline = time.monotonic() + FINAL_DRAIN
            while any(spool.pending_bytes for spool in self.spools) and time.monotonic() < deadline:
                self._wake.set()
                await asyncio.sleep(0.05)
        # Not gather() nor wait_for(): a task can miss its cancellation (Python 3.11's wait_for returns
        # the inner result when it completes as the cancel arrives: the flush above sets `_wake`, which
        # the pump is waiting for; nats-py's publish and close catch CancelledError), and a stop must
        # not wait for ever on that. The loops also end on `_stopping`.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
            if late:
                log.warning(
                    "Agent events: %s did not end within %.0f s of the stop; going on without them",
                    ", ".join(task.get_name() for task in late),
                    STOP_TIMEOUT,
                )
        closing = asyncio.ensure_future(self.nc.close())
        done, _ = await asyncio.wait((closing,), timeout=STOP_TIMEOUT)
        if not done:
            closing.cancel()
        elif not closing.cancelled():
            closing.exception()  # retrieved: a failed close at a stop changes nothing
        self._write_state()
        for spool in self.spools:
            spool.close()

    # -- NATS -------------------------------------------------------------------------------------------

    async def _servers(self) -> list[str]:
        if self.config.urls:
            return list(self.config.urls)
        while True:  # the embedded server: its URL is written by the manager before remoted starts
            with contextlib.suppress(OSError):
                url = self.home.nats_url_file.read_text().strip()
                if url:
                    return [url]
            await asyncio.sleep(1.0)

    async def _connect(self) -> None:
        servers = await self._servers()
        options = await asyncio.to_thread(nats_options, self.config)
        failures = 0
        while not self._stopping:
            try:
                await self.nc.connect(
                    servers,
                    **options,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_TIME_WAIT,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    ping_interval=10,
                    max_outstanding_pings=3,
                )
            except (NatsError, OSError, TimeoutError) as error:
                failures += 1
                self.counters.nats = f"unavailable: {error!r}"[:200]
                await asyncio.sleep(backoff_delay(failures, base=BACKOFF_MIN, cap=BACKOFF_MAX))
                continue
            self.counters.nats = "up"
            self._wake.set()
            return

    async def _on_error(self, error: Exception) -> None:
        log.debug("agent events NATS: %r", error)

    async def _on_disconnected(self) -> None:
        self.counters.nats = "reconnecting"

    async def _on_reconnected(self) -> None:
        self.counters.nats = "up"
        self._setup_done = False
        self._wake.set()

    async def _setup(self) -> None:
        """Create the stream (`<nats><replicas>` of them), or bring an existing one to our subject and
        limits (its replicas stay the NATS operator's call); then, when replicated, wait for its leader."""
        await self._ensure_stream()
        if self.config.replicas > 1:
            await await_leaders(self.js, (self.events.stream,))

    async def _ensure_stream(self) -> None:
        js = self.nc.jetstream()
        events = self.events
        subject = f"{self.prefix}.{EVENTS_TOKEN}.>"
        wanted: dict[str, Any] = {
            "max_age": events.max_age,
            "max_bytes": events.max_bytes,
            "discard": js_api.DiscardPolicy.OLD,
            "duplicate_window": events.duplicate_window,
        }
        try:
            info = await js.stream_info(events.stream)
        except NotFoundError:
            await js.add_stream(
                js_api.StreamConfig(
                    name=events.stream,
                    subjects=[subject],
                    storage=js_api.StorageType.FILE,
                    num_replicas=self.config.replicas,
                    description="agentpulse agent events (log lines, FIM, inventory, SCA, ...)",
                    **wanted,
                )
            )
            log.info(
                "Created JetStream stream %s (subjects %s, %d replicas)",
                events.stream,
                subject,
                self.config.replicas,
            )
            return
        config = info.config
        if self.index <= 1:  # said by one process: process 0, or worker 1
            note_replicas(
                self._replicas_noted, f"stream {events.stream}", config.num_replicas, self.config.replicas
            )
        subjects = list(config.subjects or [])
        current = {name: getattr(config, name) for name in wanted}
        if subject not in subjects or current != wanted:
            if subject not in subjects:
                subjects.append(subject)
            with contextlib.suppress(NatsError):  # two workers updating at once: the other one did it
                await js.update_stream(config.evolve(subjects=subjects, **wanted))
            log.info("Updated JetStream stream %s (subjects %s, limits)", events.stream, ", ".join(subjects))

    # -- the pump ---------------------------------------------------------------------------------------

    async def _pump(self) -> None:
        failures = 0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            if not self.nc.is_connected:
                continue
            try:
                if not self._setup_done:
                    await self._setup()
                    self._setup_done = True
                await self._drain()
                failures = 0
            except (Unavailable, NatsError, OSError, TimeoutError) as why:
                for spool in self.spools:
                    spool.rewind()
                failures += 1
                self._setup_done = False
                log.debug("agent events held in the spool: %r", why)
                await asyncio.sleep(backoff_delay(failures, base=BACKOFF_MIN, cap=BACKOFF_MAX))
                self._wake.set()
            except Exception:
                for spool in self.spools:
                    spool.rewind()
                log.exception("agent events publisher failed; retrying")
                await asyncio.sleep(BACKOFF_MAX)
                self._wake.set()

    def _next_spool(self) -> Spool | None:
        for spool in self.spools:
            if spool.unread:
                return spool
        return None

    async def _drain(self) -> None:
        """Publish everything readable, up to WINDOW batches in flight; ack each batch in order.

        One acknowledgement per batch, not per event: every event but a batch's last goes out without a
        reply subject (JetStream stores it, sending nothing back), the last one with one. JetStream
        handles one connection's messages in order, so the last one's PubAck means the batch is stored.
        If anything is in doubt (no ack in time, an error, a lost connection) the whole batch goes again
        and `Nats-Msg-Id` drops what was stored already. Acking each event cost five times as much CPU.
        """
        nc = self.nc
        js = self.js
        send = getattr(nc, "_send_command", None)  # see the module note; None: one publish() each
        in_flight: deque[tuple[Spool, Position, int, asyncio.Future[Any]]] = deque()
        while True:
            spool = self._next_spool()
            if spool is not None and len(in_flight) < WINDOW:
                records, upto = spool.take(BATCH)
                if upto is None:  # nothing readable after all (a segment boundary): settle, look again
                    if not in_flight:
                        return
                    await self._settle(*in_flight.popleft())
                    continue
                *bulk, last = records
                if bulk and send is not None:
                    await send(b"".join(r if r.startswith(WIRE_MARK) else _rewire(r) for r in bulk))
                else:
                    for record in bulk:
                        subject, msg_id, body = decode_record(record)
                        await nc.publish(subject, body, headers={MSG_ID_HEADER: msg_id})
                subject, msg_id, body = decode_record(last)
                future = await js.publish_async(subject, body, headers={MSG_ID_HEADER: msg_id})
                # The next batch at once: with a thousand connections one loop iteration reads far more
                # than one batch, so yielding after each one would publish slower than agents send.
                in_flight.append((spool, upto, len(records), future))
                continue
            if not in_flight:
                return
            await self._settle(*in_flight.popleft())
            self._retire_drained()

    async def _settle(self, spool: Spool, upto: Position, count: int, future: asyncio.Future[Any]) -> None:
        try:
            await asyncio.wait_for(future, ACK_TIMEOUT)
        except TimeoutError:
            raise Unavailable(f"no JetStream acknowledgement within {ACK_TIMEOUT:.0f} s") from None
        except NatsError as error:
            raise Unavailable(f"JetStream refused an agent event: {error!r}") from None
        spool.ack(upto)
        self.counters.published += count
        if self.on_acked is not None:
            self.on_acked()

    def _retire_drained(self) -> None:
        """An orphaned spool (from a run with more processes) that is empty is removed."""
        while len(self.spools) > 1 and not self.spools[0].pending_bytes and not self.spools[0].unread:
            spool = self.spools.pop(0)
            spool.close()
            for path in spool.directory.iterdir():
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                spool.directory.rmdir()

    # -- state for `agentpulse status` ------------------------------------------------------------------

    async def _state_writer(self) -> None:
        while not self._stopping:
            await asyncio.sleep(STATE_INTERVAL)
            await asyncio.to_thread(self._write_state)

    def _write_state(self) -> None:
        counters = self.counters
        counters.spooled_bytes = self.pending_bytes
        if self.nc.is_connected:
            counters.nats = "up"
        elif counters.nats == "up":
            counters.nats = "reconnecting"
        counters.updated = time.time()
        tmp = self.state_path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(asdict(counters)))
            os.replace(tmp, self.state_path)


def _rewire(record: bytes) -> bytes:
    """A record of a spool written before records were NATS messages, as one."""
    return wire_record(*decode_record(record))


def read_states(home: Home) -> list[dict[str, Any]]:
    """Every remoted process's last written counters (for `agentpulse status`)."""
    states = []
    root = home.events_spool_dir
    for path in sorted(root.glob("*.state")) if root.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            states.append(json.loads(path.read_text()))
    return states
