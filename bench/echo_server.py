"""A minimal ack server written only for the benchmark: the second baseline of fleet.py.

It does what a keep-alive strictly needs on the wire (frame, find the key, decrypt, verify, parse, encrypt
and send the ack) and nothing else: no status, no storage, no events. The manager's throughput divided by
this one's is what status tracking, storage and events cost.

    .venv/bin/python bench/echo_server.py --keys client.keys --port 1514
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
from pathlib import Path

import uvloop

from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.errors import WireError
from agentpulse.wire.frames import LENGTH, FrameDecoder
from agentpulse.wire.keys import KeysFile
from agentpulse.wire.secure import AgentCipher, split_header


class EchoAck(asyncio.Protocol):
    def __init__(self, ciphers: dict[int, AgentCipher], counter: SenderCounter) -> None:
        self.ciphers = ciphers
        self.counter = counter
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            for frame in self.decoder.feed(data):
                envelope = split_header(frame)
                cipher = self.ciphers[int(envelope.agent_id or 0)]
                message = cipher.open(envelope)
                parsed = control.parse_from_agent(message.payload)
                if isinstance(parsed, control.Shutdown):
                    continue
                global_counter, local_counter = self.counter.advance()
                ack = cipher.seal(
                    control.ACK,
                    cipher=envelope.cipher,
                    rand=random.getrandbits(16),
                    global_counter=global_counter,
                    local_counter=local_counter,
                )
                self.transport.write(LENGTH.pack(len(ack)) + ack)
        except (WireError, KeyError):
            self.transport.close()


async def serve(keys_path: Path, port: int) -> None:
    keys = KeysFile.parse(keys_path.read_text())
    ciphers = {entry.number: AgentCipher.for_key(entry.id, entry.name, entry.key) for entry in keys.active()}
    counter = SenderCounter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoAck(ciphers, counter), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"echo-ack server on 127.0.0.1:{port} for {len(ciphers)} agents", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.keys, args.port))


if __name__ == "__main__":
    main()
