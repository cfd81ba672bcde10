"""The record pipe between remoted worker processes and the manager: batches of small tuples, framed.

A worker holds the agents' connections; the manager holds the store. Everything a worker's remoted would
hand to the store or to the grace tracker is appended to a batch here and sent at most every
`flush_interval` seconds (sooner when the batch is large or someone waits for it), pickled, behind a
4-byte length. Both ends are our own processes on a private socketpair, so pickle is safe here and the
cheapest codec at hand.
"""

from __future__ import annotations

import asyncio
import enum
import pickle
from collections.abc import Callable
from typing import Any

from agentpulse.records import StatusUpdate
from agentpulse.remoted.grace import LOCAL
from agentpulse.status import StatusCode, Trigger
from agentpulse.wire.control import Keepalive, interned
from agentpulse.wire.frames import LENGTH, FrameDecoder

# A batch of 10,000 keep-alives pickles to a few MB at most; a KEYS command carries up to
# wire.keys.FILE_MAX (48 MB) of client.keys text.
PIPE_FRAME_MAX = 64 * 1024 * 1024
KEEPALIVE_FIELDS = Keepalive.__dataclass_fields__.keys()
_TRIGGERS = {trigger.value: trigger for trigger in Trigger}


class Tag(enum.StrEnum):
    """The first field of a record from a worker to the manager: what the rest of the tuple is."""

    # (UPDATE, agent, trigger, at, keep-alive fields or SAME_KEEPALIVE, code, version, overload lag)
    UPDATE = enum.auto()
    REPEATS = enum.auto()  # (REPEATS, agent ids, times): agents repeating their last keep-alive, in order
    STATE = enum.auto()  # (STATE, agent, state json): a getstate reply
    COUNTS = enum.auto()  # (COUNTS, {agent: events})
    BOUND = enum.auto()  # (BOUND, agent): for the grace tracker, with the worker as holder
    CLOSED = enum.auto()  # (CLOSED, agent)
    RELEASED = enum.auto()  # (RELEASED, agent)
    READY = enum.auto()  # (READY, worker index, tcp port): the worker listens
    ADMIT = enum.auto()  # (ADMIT, request, agent, counter, is startup, highest known here): see replay.py
    # (HIGHEST, {agent: highest counter}): agents that talked, or whose connection closes
    HIGHEST = enum.auto()
    UNADMITTED = enum.auto()  # (UNADMITTED, agent): an admitted connection closed before it was bound
    KEYS_ADDED = enum.auto()  # (KEYS_ADDED, token): the lines of ADD_KEYS <token> are in the key store
    KEYS_LOADED = enum.auto()  # (KEYS_LOADED, worker index, generation): the worker uses those keys now
    FAILED = enum.auto()  # (FAILED, worker index, reason): the worker could not start, and exits
    STATS = enum.auto()  # (STATS, worker index, stats.WorkerStats): its counters, once a second (metrics)
    PUSHED = enum.auto()  # (PUSHED, agent, md5, ok): how a Command.PUSH to that agent ended
    # (LAG, worker index, peak loop lag s, sent at (CLOCK_MONOTONIC, the same in every process), bytes
    # the worker has not written to the pipe yet): once a second, for the manager's liveness deadlines
    LAG = enum.auto()


class Command(enum.StrEnum):
    """The first field of a command from the manager to a worker."""

    STOP = enum.auto()  # (STOP,)
    SEND = enum.auto()  # (SEND, agent ids, payload): the worker holding an agent sends it the payload
    VERDICT = enum.auto()  # (VERDICT, request, verdict value, highest counter): the answer to an ADMIT
    DROP = enum.auto()  # (DROP, agent): another worker's connection overtook the agent's connection here
    # (ADD_KEYS, token, lines, signature before, after): enrolment's client.keys lines, to take before
    # the agent is told its key; the worker answers KEYS_ADDED
    ADD_KEYS = enum.auto()
    # (KEYS, generation, text): the client.keys lines the manager accepted; the worker's only source of
    # keys (it never reads the file), first thing after it starts and after every accepted reload
    KEYS = enum.auto()
    # (PUSH, agent, md5, path, quiet): send the agent that merged.mg (remoted/pushes.py); answered with
    # PUSHED, except with quiet by a worker that does not hold the agent (sent to every worker)
    PUSH = enum.auto()
    # (PAUSE, paused): several nodes, the node lost its lease (True: close every connection and take
    # none) or registered again (False)
    PAUSE = enum.auto()
    # (LISTEN, generation): bind the port and take agents, once the keys in use are of this KEYS
    # generation or a later one. A worker is started (and loads its keys) while the manager's store
    # resets the last run's agents; it listens only once that reset is committed (worker_pool.py).
    LISTEN = enum.auto()


Record = tuple[Any, ...]


def keepalive_to_tuple(keepalive: Keepalive) -> tuple[object, ...]:
    return tuple(getattr(keepalive, name) for name in KEEPALIVE_FIELDS)


SAME_KEEPALIVE = 1  # in place of the fields: the agent repeated the keep-alive it sent last


def update_to_record(update: StatusUpdate, keepalive: tuple[object, ...] | int | None) -> Record:
    return (
        Tag.UPDATE,
        update.agent_id,
        update.trigger.value,
        update.at,
        keepalive,
        int(update.code),
        update.version,
        update.overload,
    )


class UpdateDecoder:
    """The manager's end: rebuilds StatusUpdates, reusing an agent's last keep-alive when it repeats."""

    def __init__(self) -> None:
        self.last: dict[int, Keepalive] = {}  # each agent's last keep-alive, which REPEATS refer to

    def __call__(self, record: Record) -> StatusUpdate:
        _, agent_id, trigger, at, fields, code, version, overload = record
        keepalive: Keepalive | None = None
        if fields == SAME_KEEPALIVE:
            keepalive = self.last.get(agent_id)
        elif fields is not None:
            keepalive = self.last[agent_id] = interned(Keepalive(*fields))
        return StatusUpdate(agent_id, _TRIGGERS[trigger], at, keepalive, StatusCode(code), version, overload)


def encode(records: list[Record]) -> bytes:
    body = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(body)) + body


class PipeEnd(asyncio.Protocol):
    """One end of the pipe (either process): sends batches, and hands each batch read to `on_batch`;
    `on_lost` when the pipe closes."""

    def __init__(self, on_batch: Callable[[list[Record]], None], on_lost: Callable[[], None]) -> None:
        self.decoder = FrameDecoder(PIPE_FRAME_MAX)
        self.on_batch = on_batch
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports duck-type Transport

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.on_batch(pickle.loads(frame))

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()

    def send(self, records: list[Record]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(records))


class PipeSink:
    """A worker's store and grace tracker: records go to the manager in batches (RecordSink + GraceEvents)."""

    def __init__(self, pipe: PipeEnd, flush_interval: float = 0.05, max_batch: int = 5000) -> None:
        self.pipe = pipe
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self._batch: list[Record] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sent: dict[int, Keepalive] = {}
        # Most records are an agent repeating its keep-alive: two flat lists pickle and unpickle at a
        # fraction of the cost of one tuple each. They become one REPEATS record before any other record.
        self._repeat_ids: list[int] = []
        self._repeat_ats: list[float] = []
        self._soon = False

    def add(self, record: Record) -> None:
        if self._repeat_ids:
            self._close_repeats()
        self._batch.append(record)
        self._added()

    def send_now(self, record: Record) -> None:
        """A record someone waits for: it goes with what is batched at the end of this turn of the loop,
        not after `flush_interval`. Not at once: in a storm one turn asks about hundreds of new
        connections, and one write (one wake-up of the manager) carries them all."""
        self.add(record)
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Before the batch timer: at the end of this turn of the loop, so a burst still makes one batch."""
        if not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def _added(self) -> None:
        if len(self._batch) + len(self._repeat_ids) >= self.max_batch:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def _close_repeats(self) -> None:
        self._batch.append((Tag.REPEATS, self._repeat_ids, self._repeat_ats))
        self._repeat_ids, self._repeat_ats = [], []

    def flush(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._repeat_ids:
            self._close_repeats()
        if self._batch:
            batch, self._batch = self._batch, []
            self.pipe.send(batch)

    def submit(self, update: StatusUpdate) -> None:
        keepalive = update.keepalive
        fields: tuple[object, ...] | int | None = None
        if keepalive is not None:
            # remoted hands over the same object while an agent repeats its keep-alive text
            if self._sent.get(update.agent_id) is keepalive:
                if (
                    update.trigger is Trigger.ALIVE
                    and update.code is StatusCode.NONE
                    and update.version is None
                ):
                    self._repeat_ids.append(update.agent_id)
                    self._repeat_ats.append(update.at)
                    self._added()
                    return
                fields = SAME_KEEPALIVE
            else:
                self._sent[update.agent_id] = keepalive
                fields = keepalive_to_tuple(keepalive)
        self.add(update_to_record(update, fields))

    def record_state(self, agent_id: int, state_json: str) -> None:
        self.add((Tag.STATE, agent_id, state_json))

    def count_events(self, counts: dict[int, int]) -> None:
        self.add((Tag.COUNTS, counts))

    def bound(self, agent_id: int, holder: int = LOCAL) -> None:
        self.add((Tag.BOUND, agent_id))

    # A connection that ends is told soon: until the manager knows, a new connection of the agent on
    # another worker is refused as "key in use".
    def closed(self, agent_id: int, holder: int = LOCAL) -> None:
        self.add((Tag.CLOSED, agent_id))
        self._flush_soon()

    def released(self, agent_id: int, holder: int = LOCAL) -> None:
        self.add((Tag.RELEASED, agent_id))
        self._flush_soon()
