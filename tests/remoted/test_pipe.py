"""The record pipe between workers and the manager: every record survives, repeated keep-alives are sent
by reference, over a real socketpair."""

from __future__ import annotations

import asyncio
import socket

from agentpulse.records import StatusUpdate
from agentpulse.remoted import pipe
from agentpulse.status import StatusCode, Trigger
from agentpulse.wire import control

KEEPALIVE = control.parse_keepalive(b"Linux |h |6.1 |#1 |x86_64 - Wazuh v4.14.7\nx merged.mg\n")


def test_records_cross_a_socketpair_and_repeated_keepalives_go_by_reference() -> None:
    async def scenario() -> list[pipe.Record]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        received: list[pipe.Record] = []
        done = asyncio.Event()
        reader = pipe.PipeEnd(received.extend, done.set)
        await loop.connect_accepted_socket(lambda: reader, sock=ours)
        writer = pipe.PipeEnd(lambda batch: None, lambda: None)
        await loop.connect_accepted_socket(lambda: writer, sock=theirs)
        sink = pipe.PipeSink(writer, flush_interval=0.01)
        sink.submit(StatusUpdate(7, Trigger.STARTUP, 1.0))
        for second in range(2, 5):
            sink.submit(StatusUpdate(7, Trigger.ALIVE, float(second), keepalive=KEEPALIVE))
        sink.submit(
            StatusUpdate(7, Trigger.VERSION_REFUSED, 5.0, code=StatusCode.INVALID_VERSION, version="v9")
        )
        sink.bound(7)
        sink.closed(7)
        sink.record_state(7, '{"status":"connected"}')
        sink.count_events({7: 3})
        sink.flush()
        await asyncio.sleep(0.05)
        assert writer.transport is not None
        writer.transport.close()
        await asyncio.wait_for(done.wait(), 5)
        return received

    records = asyncio.run(scenario())
    Tag = pipe.Tag
    assert [record[0] for record in records] == [
        Tag.UPDATE,
        Tag.UPDATE,
        Tag.REPEATS,
        Tag.UPDATE,
        Tag.BOUND,
        Tag.CLOSED,
        Tag.STATE,
        Tag.COUNTS,
    ]
    assert records[2] == (Tag.REPEATS, [7, 7], [3.0, 4.0])  # the repeats, in order, before what follows
    decode = pipe.UpdateDecoder()
    first = [decode(record) for record in records[:2]]
    assert first[0] == StatusUpdate(7, Trigger.STARTUP, 1.0)
    assert first[1].keepalive == KEEPALIVE and decode.last[7] is first[1].keepalive
    assert decode(records[3]) == StatusUpdate(
        7, Trigger.VERSION_REFUSED, 5.0, None, StatusCode.INVALID_VERSION, "v9"
    )


def test_a_repeated_keepalive_with_a_version_is_a_record_by_reference_not_a_repeat() -> None:
    sent: list[list[pipe.Record]] = []

    class Collect(pipe.PipeEnd):
        def send(self, records: list[pipe.Record]) -> None:
            sent.append(records)

    async def scenario() -> None:
        sink = pipe.PipeSink(Collect(lambda batch: None, lambda: None))
        sink.submit(StatusUpdate(3, Trigger.ALIVE, 1.0, keepalive=KEEPALIVE))
        sink.submit(StatusUpdate(3, Trigger.ALIVE, 2.0, keepalive=KEEPALIVE, version="v4.14.7"))
        sink.submit(StatusUpdate(3, Trigger.ALIVE, 3.0, keepalive=KEEPALIVE))
        sink.flush()

    asyncio.run(scenario())
    [records] = sent
    assert [record[0] for record in records] == [pipe.Tag.UPDATE, pipe.Tag.UPDATE, pipe.Tag.REPEATS]
    assert records[1][4] == pipe.SAME_KEEPALIVE and records[2] == (pipe.Tag.REPEATS, [3], [3.0])


def test_the_questions_of_one_loop_turn_go_in_one_batch_at_its_end_not_after_the_flush_interval() -> None:
    """send_now: what a worker waits for (admission questions) leaves at the end of the turn that asked,
    in one write for the turn (a storm asks hundreds per turn), long before the batch timer."""

    async def scenario() -> tuple[list[list[pipe.Record]], float]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        batches: list[list[pipe.Record]] = []
        arrived = asyncio.Event()

        def on_batch(batch: list[pipe.Record]) -> None:
            batches.append(batch)
            arrived.set()

        reader = pipe.PipeEnd(on_batch, lambda: None)
        await loop.connect_accepted_socket(lambda: reader, sock=ours)
        writer = pipe.PipeEnd(lambda batch: None, lambda: None)
        await loop.connect_accepted_socket(lambda: writer, sock=theirs)
        sink = pipe.PipeSink(writer, flush_interval=30.0)
        started = loop.time()
        sink.bound(1)
        for request in range(1, 4):
            sink.send_now((pipe.Tag.ADMIT, request, request, 0, True, 0))
        assert batches == []  # nothing written within the turn
        await asyncio.wait_for(arrived.wait(), 5)
        waited = loop.time() - started
        await asyncio.sleep(0.05)  # no second batch follows
        assert writer.transport is not None
        writer.transport.close()
        return batches, waited

    batches, waited = asyncio.run(scenario())
    assert batches == [[(pipe.Tag.BOUND, 1)] + [(pipe.Tag.ADMIT, n, n, 0, True, 0) for n in range(1, 4)]]
    assert waited < 1.0  # the turn's end, not the 30 s flush interval
