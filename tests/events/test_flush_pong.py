"""The keep-alive and config publishers must never cancel a flush whose PONG may still come (nats-py issue 624 family).

nats-py's `_process_pong` calls `set_result` on the oldest flush future; if that flush was cancelled (its
timeout ran out while the server was slow), the PONG raises InvalidStateError in the client's read loop,
which then stops: the connection is deaf (no JetStream acks, no PONGs) until the server drops it. Here the
server is paused (SIGSTOP) longer than a flush may wait, then resumed: the client must still read.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import nats
import pytest

from agentpulse.events import payloads
from agentpulse.events.config import ConfigPublisher
from agentpulse.events.keepalives import FLUSH_TIMEOUT, KeepalivePublisher
from agentpulse.events.publisher import NatsLink
from agentpulse.status import ConnectionStatus
from agentpulse.wire.control import Keepalive
from tests.events.natsserver import NatsServer

KEEPALIVE = Keepalive(version="v4.14.7", agent_ip="10.0.0.1")


def publisher(link: NatsLink) -> KeepalivePublisher:
    return KeepalivePublisher(
        link,
        prefix="agentpulse",
        origin=payloads.Origin("node01", "manager"),
        run=1,
        name_of=lambda agent_id: f"agent-{agent_id}",
        status_of=lambda agent_id: ConnectionStatus.ACTIVE,
    )


# What a test publishes through the link: `note(n)` takes the n-th event, `flush()` sends what was noted.
Publishing = tuple[Callable[[int], None], Callable[[], Awaitable[None]]]


def keepalive_events(link: NatsLink) -> Publishing:
    keepalives = publisher(link)
    return (lambda n: keepalives.on_keepalive(n, float(n), KEEPALIVE)), keepalives.flush


def config_events(link: NatsLink) -> Publishing:
    configs = ConfigPublisher(
        link, prefix="agentpulse", origin=payloads.Origin("node01", "manager"), name_of=lambda _: "a"
    )
    return (lambda n: configs.on_config_status(n, "synced", float(n))), configs.flush


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("subjects", "publishing"),
    [("agentpulse.keepalive.>", keepalive_events), ("agentpulse.config.>", config_events)],
    ids=["keepalive-events", "config-events"],
)
def test_a_slow_server_does_not_kill_the_read_loop(
    nats_server: NatsServer, subjects: str, publishing: Callable[[NatsLink], Publishing]
) -> None:
    asyncio.run(_slow_server(nats_server, subjects, publishing))


async def _slow_server(
    nats_server: NatsServer, subjects: str, publishing: Callable[[NatsLink], Publishing]
) -> None:
    nc = await nats.connect(nats_server.url, ping_interval=120, allow_reconnect=False)
    link = NatsLink(nc)
    link.js = nc.jetstream()
    note, flush = publishing(link)
    watcher = await nats.connect(nats_server.url)
    seen: list[bytes] = []

    async def on_message(message: nats.aio.msg.Msg) -> None:
        seen.append(message.data)

    async def on_request(message: nats.aio.msg.Msg) -> None:
        await message.respond(b"pong")

    await watcher.subscribe(subjects, cb=on_message)
    await watcher.subscribe("test.echo", cb=on_request)
    await watcher.flush()
    try:
        assert nats_server.process is not None
        os.kill(nats_server.process.pid, signal.SIGSTOP)
        try:
            note(1)
            # The server cannot answer: a flush that waits does so FLUSH_TIMEOUT at most (and any flush
            # with a timeout gives up inside this wait, its PONG's future cancelled).
            await asyncio.wait_for(flush(), FLUSH_TIMEOUT * 2)
        finally:
            os.kill(nats_server.process.pid, signal.SIGCONT)
        await asyncio.sleep(0.5)  # the late PONG arrives now
        # The client still reads (a request gets its reply: JetStream acks need the same), and later
        # events arrive.
        reply = await nc.request("test.echo", b"ping", timeout=FLUSH_TIMEOUT * 2)
        assert reply.data == b"pong"
        note(2)
        await flush()
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(seen) == 2, seen
        assert nc.is_connected
    finally:
        await nc.close()
        await watcher.close()
