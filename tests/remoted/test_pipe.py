"""The record pipe between workers and the manager: every record survives, repeated keep-alives are sent
by reference, over a real socketpair."""

from __future__ import annotations

import asyncio
import socket

from agentpulse.remoted import pipe
from agentpulse.status import Event, StatusCode
from agentpulse.store.records import StatusUpdate
from agentpulse.wire import control

KEEPALIVE = control.parse_keepalive(b"Linux |h |6.1 |#1 |x86_64 - Wazuh v4.14.7\nx merged.mg\n")


def test_records_cross_a_socketpair_and_repeated_keepalives_go_by_reference() -> None:
    async def scenario() -> list[pipe.Record]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        received: list[pipe.Record] = []
        done = asyncio.Event()
        reader = pipe.PipeReader(received.extend, done.set)
        await loop.connect_accepted_socket(lambda: reader, sock=ours)
        writer = pipe.PipeReader(lambda batch: None, lambda: None)
        await loop.connect_accepted_socket(lambda: writer, sock=theirs)
        sink = pipe.PipeSink(writer, flush_interval=0.01)
        sink.submit(StatusUpdate(7, Event.STARTUP, 1.0))
        for second in range(2, 5):
            sink.submit(StatusUpdate(7, Event.ALIVE, float(second), keepalive=KEEPALIVE))
        sink.submit(
            StatusUpdate(7, Event.VERSION_REFUSED, 5.0, code=StatusCode.INVALID_VERSION, version="v9")
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
    assert [record[0] for record in records] == ["u", "u", "u", "u", "u", "b", "x", "s", "c"]
    assert records[2][4] == pipe.SAME_KEEPALIVE and records[3][4] == pipe.SAME_KEEPALIVE
    decode = pipe.UpdateDecoder()
    updates = [decode(record) for record in records[:5]]
    assert updates[0] == StatusUpdate(7, Event.STARTUP, 1.0)
    assert [update.keepalive for update in updates[1:4]] == [KEEPALIVE] * 3
    assert updates[2].keepalive is updates[1].keepalive
    assert updates[4] == StatusUpdate(7, Event.VERSION_REFUSED, 5.0, None, StatusCode.INVALID_VERSION, "v9")
