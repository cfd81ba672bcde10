"""The 65,536-byte frame limit applies to events: a 10 MB frame and a zlib bomb inside an event frame are
refused (connection closed) without reading or inflating them whole, and publish nothing; the largest
event an agent may build (65,408 bytes) is published whole."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
import zlib

from agentpulse.agent.connection import AgentCodec
from agentpulse.wire import control
from agentpulse.wire.frames import encode_frame
from agentpulse.wire.secure import MAX_MESSAGE, CipherKind
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.events.agent_events import body, field_bytes, read_events
from tests.events.fleet import Agent, nats_settings
from tests.events.natsserver import NatsServer

TEN_MB = 10 * 1024 * 1024


def test_oversized_frame_and_zlib_bomb_are_refused_largest_event_is_published(
    nats_server: NatsServer, manager: ManagerProcess
) -> None:
    manager.settings = nats_settings(nats_server.url)
    keys = manager.add_agents(3)
    manager.start()

    async def scenario() -> tuple[int, bool, bytes]:
        # 1. An authenticated connection announces a 10 MB frame: the manager reads its 4-byte length,
        # refuses it (more than 65,536) and closes.
        sock = socket.create_connection((LOOPBACK, manager.port))
        sock.settimeout(10)
        codec = AgentCodec(keys[0])
        sock.sendall(codec.seal(control.build_startup("v4.14.7")))
        assert len(sock.recv(4096)) > 4  # the ack
        pushed = 0
        try:
            sock.sendall(struct.pack("<I", TEN_MB))
            chunk = b"1:/var/log/big:" + b"A" * 65536
            while pushed < TEN_MB:
                sock.sendall(chunk)
                pushed += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            sock.close()
        # 2. A zlib bomb in an authenticated event frame: 10 MB that compress to a few KB.
        bomb = await Agent.connect(manager, keys[1])
        await bomb.startup()
        codec = bomb.connection.codec
        global_counter, local_counter = codec.counter.advance()
        sealed = codec.cipher.seal(
            b"1:/var/log/bomb:x",
            cipher=CipherKind.AES,
            rand=random.getrandbits(16),
            global_counter=global_counter,
            local_counter=local_counter,
            agent_id=codec.prefix,
            compressor=lambda block: zlib.compress(block + b"A" * TEN_MB, 9),
        )
        assert len(sealed) < 65536
        started = time.monotonic()
        bomb.connection.send_raw(encode_frame(sealed))
        closed = await bomb.connection.receive(10) is None
        assert time.monotonic() - started < 5
        # 3. The largest event a 4.x agent can build goes through whole.
        largest = b"1:/var/log/largest:" + bytes(random.randrange(32, 127) for _ in range(MAX_MESSAGE - 19))
        ok = await Agent.connect(manager, keys[2])
        await ok.startup()
        ok.connection.send(largest)
        await ok.keepalive()
        return pushed, closed, largest

    try:
        pushed, closed, largest = asyncio.run(scenario())
        assert pushed < TEN_MB  # the manager closed the socket long before 10 MB were through
        assert closed
        messages = asyncio.run(read_events(nats_server.url, 1, settle=2.0))
        assert len(messages) == 1  # neither refused frame produced an event
        event = body(messages[0])
        assert event["agent_id"] == keys[2].id
        assert b"1:" + field_bytes(event, "location") + b":" + field_bytes(event, "text") == largest  # type: ignore[operator]
        log = (manager.home.root / "logs" / "ossec.log").read_text()
        assert f"frame length {TEN_MB} > 65536" in log
        assert "decompressed message longer than 65536 bytes" in log
    finally:
        manager.stop()
