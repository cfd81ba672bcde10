"""The publishers end at a stop even when nats-py swallows their cancellation.

nats-py's `publish` awaits `_flush_pending`, which catches CancelledError and returns (nats/aio/client.py,
2.16.0): a task cancelled there goes on as if nothing happened. A `while True` publisher loop then never
ends, and the manager's stop waited for it for ever (the stop that "never exited" in issue 19). The
stand-in below is nats-py's behaviour, not one of our components.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import pytest

from agentpulse.events import payloads
from agentpulse.events.keepalives import KeepalivePublisher
from agentpulse.events.publisher import NatsLink
from agentpulse.events.service import EventsService
from agentpulse.status import ConnectionStatus
from agentpulse.wire.control import Keepalive


class SwallowingNats:
    """Publishes the way nats-py does when its flush queue is full: waits, and swallows a cancellation."""

    is_connected = True

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, subject: str, payload: bytes) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as nats-py's _flush_pending
            await asyncio.sleep(0.005)
        self.published += 1

    async def flush(self, timeout: int) -> None:
        await asyncio.sleep(0)


@pytest.mark.timeout(30)  # before the fix the loop never ends: asyncio.run hangs at its teardown
def test_a_keepalive_publisher_told_to_stop_ends_though_its_cancellation_was_swallowed() -> None:
    async def scenario() -> None:
        nc: Any = SwallowingNats()
        link = NatsLink(nc)
        link.js = object()  # type: ignore[assignment]
        publisher = KeepalivePublisher(
            link,
            prefix="agentpulse",
            origin=payloads.Origin("node01", "manager"),
            run=1,
            name_of=lambda agent_id: None,
            status_of=lambda agent_id: ConnectionStatus.ACTIVE,
            interval=0.001,
        )

        async def feed() -> None:
            for round_ in range(10_000):
                for agent_id in range(1, 50):
                    publisher.on_keepalive(agent_id, float(round_), Keepalive(version="v4.14.7"))
                await asyncio.sleep(0.001)

        feeding = asyncio.create_task(feed())
        task = asyncio.create_task(publisher.run())
        await asyncio.sleep(0.3)
        assert nc.published > 0
        publisher.stopped = True
        task.cancel()
        done, _ = await asyncio.wait((task,), timeout=2.0)
        feeding.cancel()
        assert task in done

    asyncio.run(scenario())


def test_work_left_behind_at_the_stop_that_fails_later_is_not_reported_as_unhandled() -> None:
    """The 200k preset's stop printed "unhandled exception during asyncio.run() shutdown": the final
    outbox drain, cancelled after its bound, swallowed the cancellation and then failed on the closed
    connection, and nobody retrieved that error."""
    unhandled: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))

        async def drain() -> None:
            with contextlib.suppress(asyncio.CancelledError):  # as nats-py's _flush_pending
                await asyncio.sleep(0.2)
            raise ConnectionError("publish failed: the connection closed")

        await EventsService._bounded("final outbox drain", drain(), 0.05)
        await asyncio.sleep(0.4)  # the drain has failed by now
        gc.collect()  # a finished task with an unretrieved error reports it when collected
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert unhandled == []
