"""One ordered history per subject: JetStream writes with at most one in flight per subject, each expecting
where the subject ends.

The danger is a lost write with a later one of the same subject stored. With one agent's status events
pipelined, a NATS server (or the connection to it) that died could take an older event with it while a
newer one was stored, through another server or from nats-py's buffer on the next connection; the older
one was then stored after the newer one when it was published again (issue 16). Here an agent's next write
leaves only once JetStream acknowledged the previous one, so what the stream holds of one subject is
always a prefix of what was sent, in order. Across subjects (agents) the writes stay pipelined: a batch
goes out in waves, each holding the next write of every subject that has one.

Each write also carries `Nats-Expected-Last-Subject-Sequence` once the relay knows where the subject ends
(the stream sequence of the last PubAck or read-back). That guards against other writers: a relay that
lost the leadership but still publishes, or a republish after the duplicate window. A refused expectation
("wrong last sequence") means the subject moved: its last message is read back from the stream leader
and says whether this write is already there (it, or a later event of the same agent: every writer
publishes in this order) or must follow it. A subject's first write in a run has no expectation (nothing
known yet): for it the duplicate window (`Nats-Msg-Id`) is the guard, as before.

JetStream checks the duplicate id before the expectation, and records an id only for a message it stored
(nats-server 2.15; tests/events/test_outbox_order_nats.py), so a write refused for its expectation is
published again with the same `Nats-Msg-Id`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import APIError, NotFoundError

from agentpulse.events import payloads

EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
# 10071: "wrong last sequence: N"; 10164: the same without N, from a replicated stream whose subject has a
# write in process (the server then holds one write per subject in flight itself).
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
READ_BACKS = 3  # per subject and batch: beyond that another writer keeps moving it; the batch gives up

# From a message read back: the agent's sequence of the event it holds, or None if it cannot tell.
StoredSequence = Callable[[RawStreamMsg], int | None]


class Publisher(Protocol):
    """`pubacks.PubAcks`: a publish whose future gets the PubAck, or the stream's error."""

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[Any]: ...


@dataclass(frozen=True, slots=True)
class Write:
    subject: str
    payload: bytes
    seq: int | None  # the agent's sequence of this event; None: a row this version did not write
    msg_id: str | None = None  # stream writes; a KV write has none (each is the newest value)
    key: int = 0  # what the caller marks done: an outbox row id, an agent id


class SubjectTips:
    """One stream's subjects: the stream sequence each ends on, as this relay last learned it (a PubAck or
    a read-back). Keyed by agent id (one subject each), or by the subject for a row not of ours."""

    def __init__(self, stream: str, what: str, stored_sequence: StoredSequence) -> None:
        self.stream = stream
        self.what = what  # for the failure reason: "stream AGENT_STATUS", "KV bucket agent_status"
        self.stored_sequence = stored_sequence
        self.tips: dict[int | str, int] = {}


@dataclass(slots=True)
class Lane:
    """The writes to one subject, oldest first; `stored` is told of each one the stream holds."""

    tips: SubjectTips
    key: int | str
    stored: Callable[[Write], None]
    writes: deque[Write] = field(default_factory=deque)
    read_backs: int = 0


def status_event_sequence(message: RawStreamMsg) -> int | None:
    """A status event in the stream: its sequence from its `Nats-Msg-Id`."""
    msg_id = (message.headers or {}).get(payloads.MSG_ID_HEADER)
    ids = payloads.parse_status_msg_id(msg_id) if isinstance(msg_id, str) else None
    return ids[1] if ids is not None else None


def kv_entry_sequence(message: RawStreamMsg) -> int | None:
    """A KV entry: the sequence of the status event it holds."""
    return payloads.sequence_of_status_event(message.data)


async def publish_in_order(
    js: JetStreamContext, acks: Publisher, lanes: list[Lane], ack_timeout: float
) -> str | None:
    """Every lane's writes in order, one in flight per lane, the lanes pipelined (published through `acks`,
    read back through `js`). Ends at the first wave with a failure (what it sent is settled first); returns
    why, or None once every write is stored."""
    waiting = [lane for lane in lanes if lane.writes]
    while waiting:
        sent: list[tuple[Lane, asyncio.Future[Any]]] = []
        failure: str | None = None
        try:
            for lane in waiting:
                sent.append((lane, await _send(acks, lane)))
        except (NatsError, OSError, TimeoutError) as error:
            failure = f"publish failed: {error!r}"
        refused, moved = await _settle(sent, ack_timeout)
        failure = failure or refused
        if failure is None and moved:
            failure = await _read_back(js, moved)
        if failure is not None:
            return failure
        waiting = [lane for lane in waiting if lane.writes]
    return None


async def _send(acks: Publisher, lane: Lane) -> asyncio.Future[Any]:
    write = lane.writes[0]
    headers: dict[str, str] = {}
    if write.msg_id is not None:
        headers[payloads.MSG_ID_HEADER] = write.msg_id
    tip = lane.tips.tips.get(lane.key)
    if tip is not None:
        headers[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(tip)
    return await acks.publish(write.subject, write.payload, headers or None)


async def _settle(
    sent: list[tuple[Lane, asyncio.Future[Any]]], ack_timeout: float
) -> tuple[str | None, list[Lane]]:
    """Wait for the wave's acks: each stored write leaves its lane. Returns the first reason a write did
    not make it (if any) and the lanes whose expectation was refused."""
    failure: str | None = None
    if sent:
        _, pending = await asyncio.wait([future for _, future in sent], timeout=ack_timeout)
        for future in pending:
            future.cancel()
        if pending:
            failure = f"no JetStream acknowledgement within {ack_timeout:.0f} s"
    moved: list[Lane] = []
    for lane, future in sent:
        if future.done() and not future.cancelled() and future.exception() is None:
            seq = getattr(future.result(), "seq", None)
            if seq:  # a duplicate's ack names the original message: where the subject was, at least
                lane.tips.tips[lane.key] = seq
            else:
                lane.tips.tips.pop(lane.key, None)
            lane.stored(lane.writes.popleft())
            continue
        error = future.exception() if future.done() and not future.cancelled() else None
        if isinstance(error, APIError) and error.err_code in WRONG_LAST_SEQUENCE:
            moved.append(lane)
        elif failure is None:
            failure = f"{lane.tips.what} refused {lane.writes[0].subject}: {error or 'no acknowledgement'!r}"
    return failure, moved


async def _read_back(js: JetStreamContext, lanes: list[Lane]) -> str | None:
    """Where each moved subject ends now, from the stream leader: the writes already there leave their
    lane, the next one expects that end."""
    for lane in lanes:
        lane.read_backs += 1
        if lane.read_backs > READ_BACKS:
            return f"{lane.tips.what}: {lane.writes[0].subject} kept moving ({READ_BACKS} read-backs in one batch)"
    found = await asyncio.gather(*(_last(js, lane) for lane in lanes), return_exceptions=True)
    for lane, result in zip(lanes, found, strict=True):
        if isinstance(result, NatsError | OSError | TimeoutError):
            return f"cannot read back {lane.writes[0].subject} from {lane.tips.what}: {result!r}"
        if isinstance(result, BaseException):
            raise result
        tip, stored = result
        lane.tips.tips[lane.key] = tip
        while lane.writes and _is_there(lane.writes[0], stored):
            lane.stored(lane.writes.popleft())
    return None


async def _last(js: JetStreamContext, lane: Lane) -> tuple[int, int | None]:
    """(stream sequence, agent's sequence) of the subject's last message; (0, None) for none. Not a direct
    get: a replica may lag, the stream leader's answer is the one the expectation is checked against."""
    try:
        message = await js.get_last_msg(lane.tips.stream, lane.writes[0].subject)
    except NotFoundError:
        return 0, None
    return message.seq or 0, lane.tips.stored_sequence(message)


def _is_there(write: Write, stored: int | None) -> bool:
    """The stream holds this write: the subject's last message is it or a later event of the agent."""
    return write.seq is not None and stored is not None and stored >= write.seq
