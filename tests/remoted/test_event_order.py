"""A keep-alive read in the same loop iteration as many events is acknowledged before any of those events
is built or spooled: events are accepted as they are read and built at the end of the iteration, while
the ack is written as the keep-alive is handled. Real dispatcher, intake and publisher (its NATS is away:
the events wait in its spool), fake transports."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentpulse.agent.connection import AgentCodec
from agentpulse.config import Config, NatsConfig, RemoteConfig
from agentpulse.paths import Home
from agentpulse.remoted.intake import build_intake
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import Session
from agentpulse.wire import control
from agentpulse.wire.keys import KeysFile
from tests.events.natsserver import free_port
from tests.remoted.fakes import FakeTransport, RecordingGrace, RecordingStore

KEYS = KeysFile.parse("001 web-01 any k1\n002 web-02 any k2\n")
STARTUP = control.build_startup("v4.14.7")
KEEPALIVE = control.build_keepalive("Linux - Wazuh v4.14.7", merged_sum=None)
EVENTS = 200


def test_keepalive_ack_is_written_before_the_events_read_in_the_same_iteration(tmp_path: Path) -> None:
    async def run() -> None:
        config = Config(
            remote=RemoteConfig(),
            nats=NatsConfig(enabled=True, urls=(f"nats://127.0.0.1:{free_port()}",)),
        )
        intake = build_intake(config, Home(tmp_path), 0, 1)
        assert intake is not None and intake.publisher is not None
        publisher = intake.publisher
        keys = KeyStore()
        remoted = Remoted(config, keys, RecordingStore(), RecordingGrace(), intake=intake)
        remoted.keys_changed(keys.load(KEYS))
        await intake.start()
        try:
            sessions: list[tuple[Session, FakeTransport, AgentCodec]] = []
            for number in (1, 2):
                key = KEYS.by_id(number)
                assert key is not None
                session = Session(remoted)
                transport = FakeTransport((f"10.0.0.{number}", 40000))
                session.connection_made(transport)
                codec = AgentCodec(key)
                session.data_received(codec.seal(STARTUP))
                sessions.append((session, transport, codec))
            (noisy, _, noisy_codec), (quiet, quiet_t, quiet_codec) = sessions
            await asyncio.sleep(0)
            frames = [noisy_codec.seal(b"1:/var/log/syslog:line %d" % n) for n in range(EVENTS)]

            # One loop iteration's reads: 200 events on one connection, then a keep-alive on another.
            noisy.data_received(b"".join(frames))
            written = len(quiet_t.written)
            quiet.data_received(quiet_codec.seal(KEEPALIVE))
            assert len(quiet_t.written) == written + 1, "the keep-alive is acknowledged at once"
            assert quiet_codec.open(quiet_t.frames()[-1]) == control.Ack()
            assert publisher.counters.received == 0, "no event of the iteration was built before the ack"
            # Built and spooled at the iteration's end; on a slow machine the loop budget
            # (remoted/congestion.py) spreads them over a few more iterations.
            for _ in range(EVENTS):
                await asyncio.sleep(0)
                if publisher.counters.received == EVENTS:
                    break
            assert publisher.counters.received == EVENTS
            assert publisher.pending_bytes > 0
        finally:
            await intake.stop()

    asyncio.run(run())
