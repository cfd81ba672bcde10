"""The keep-alive path of one remoted process, without sockets, storage or events: microseconds per keep-alive.

Real `Remoted` and `Session` objects, agents already connected (startup acked), then keep-alive frames fed to
`Session.data_received` round-robin: frame, key lookup, decrypt, counters, parse (repeated text), bind, ack
sealed and written, one record to a store that drops it. What a build adds to the hot path shows here long
before it shows in `bench/fleet.py` on a shared machine. Run it against two builds in one go to compare:

    .venv/bin/python bench/keepalive_path.py [--agents 1000] [--rounds 20] [--repeat 5] [--json]
    PYTHONPATH=<other checkout>/src .venv/bin/python bench/keepalive_path.py ...  # the same, another build
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from agentpulse.agent.connection import AgentCodec
from agentpulse.config import Config, RemoteConfig
from agentpulse.records import StatusUpdate
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import Session
from agentpulse.wire import control
from agentpulse.wire.keys import KeysFile

UNAME = "Linux |bench-host |6.1.0-18-amd64 |#1 SMP |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7"


class NullTransport(asyncio.Transport):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.peer = (f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}", 40000)
        self.bytes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.bytes += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class NullStore:
    def __init__(self) -> None:
        self.count = 0

    def submit(self, update: StatusUpdate) -> None:
        self.count += 1

    def record_state(self, agent_id: int, state_json: str) -> None:
        pass

    def count_events(self, counts: dict[int, int]) -> None:
        pass


class NullGrace:
    def bound(self, agent_id: int, holder: int = 0) -> None:
        pass

    def closed(self, agent_id: int, holder: int = 0) -> None:
        pass

    def released(self, agent_id: int, holder: int = 0) -> None:
        pass


def measure(agents: int, rounds: int) -> float:
    """Microseconds of CPU per keep-alive over `rounds` keep-alives of each of `agents` connected agents."""
    keys_file = KeysFile([])
    entries = keys_file.add_many(f"bench-{n:06d}" for n in range(agents))
    keys = KeyStore()
    store = NullStore()
    remoted = Remoted(Config(remote=RemoteConfig()), keys, store, NullGrace())
    remoted.keys_changed(keys.load(keys_file))
    keepalive = control.build_keepalive(UNAME, merged_sum="4a8724b20dee0124ff9656783c490c4e")
    startup = control.build_startup("v4.14.7")
    sessions, frames = [], []
    for index, key in enumerate(entries):
        session = Session(remoted)
        session.connection_made(NullTransport(index))
        codec = AgentCodec(key)
        session.data_received(codec.seal(startup))
        sessions.append(session)
        frames.append([codec.seal(keepalive) for _ in range(rounds)])
    assert store.count == agents, "every startup accepted"
    started = time.process_time()
    for round_ in range(rounds):
        for session, sealed in zip(sessions, frames, strict=True):
            session.data_received(sealed[round_])
    took = time.process_time() - started
    assert store.count == agents * (rounds + 1), "every keep-alive accepted"
    return took / (agents * rounds) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = [measure(args.agents, args.rounds) for _ in range(args.repeat)]
    result = {
        "agents": args.agents,
        "keepalives_per_run": args.agents * args.rounds,
        "us_per_keepalive_median": round(statistics.median(figures), 2),
        "us_per_keepalive_min": round(min(figures), 2),
        "runs": [round(figure, 2) for figure in figures],
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
