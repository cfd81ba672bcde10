"""What the acknowledgement journal costs (`src/agentpulse/remoted/journal.py`), without a server.

Three figures: one `AckJournal.record()` (the write(2) before each journaled ack), one startup through
`Remoted.handle()` with and without the journal (decrypt, parse, journal, seal the ack, hand the record on),
and one fdatasync of the file after a second's worth of startups (it runs on a thread, off the loop).

    .venv/bin/python bench/ack_journal.py [--agents 20000] [--dir /path/on/the/manager's/disk] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agentpulse.agent.connection import AgentCodec
from agentpulse.config import Config, RemoteConfig
from agentpulse.records import StatusUpdate
from agentpulse.remoted.journal import AckJournal
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import Session
from agentpulse.status import Trigger
from agentpulse.wire import control
from agentpulse.wire.keys import KeysFile

STARTUP = control.build_startup("v4.14.7")


class Sink:
    """The store and the grace tracker as remoted sees them: take everything, keep nothing."""

    def submit(self, update: StatusUpdate) -> None: ...

    def record_state(self, agent_id: int, state_json: str) -> None: ...

    def count_events(self, counts: dict[int, int]) -> None: ...

    def bound(self, agent_id: int, holder: int = 0) -> None: ...

    def closed(self, agent_id: int, holder: int = 0) -> None: ...

    def released(self, agent_id: int, holder: int = 0) -> None: ...


class Transport(asyncio.Transport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def startups(agents: int, journal: AckJournal | None) -> float:
    """Microseconds per accepted startup, each agent on a session of its own."""
    keys = KeysFile([])
    entries = keys.add_many(f"bench-{n:06d}" for n in range(agents))
    store = KeyStore()
    sink = Sink()
    remoted = Remoted(Config(remote=RemoteConfig()), store, sink, sink, journal=journal)  # type: ignore[arg-type]
    remoted.keys_changed(store.load(keys))
    frames = []
    for entry in entries:
        session = Session(remoted)
        session.connection_made(Transport())
        frames.append((session, AgentCodec(entry).seal(STARTUP)))
    start = time.perf_counter()
    for session, frame in frames:
        session.data_received(frame)
    return (time.perf_counter() - start) / agents * 1e6


def records(journal: AckJournal, count: int) -> float:
    start = time.perf_counter()
    for agent_id in range(count):
        journal.record(agent_id, Trigger.STARTUP, 1_700_000_000.0 + agent_id / 1000)
    return (time.perf_counter() - start) / count * 1e6


def syncs(directory: Path, lines: int, rounds: int) -> list[float]:
    """Milliseconds of one fdatasync after `lines` new lines."""
    journal = AckJournal(directory, 99)
    journal.open()
    times = []
    for _ in range(rounds):
        records(journal, lines)
        start = time.perf_counter()
        os.fdatasync(journal._fd)  # what sync() runs on its thread
        times.append((time.perf_counter() - start) * 1e3)
    journal.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20000)
    parser.add_argument(
        "--dir", type=Path, help="where to write the journal (default: a temporary directory)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        journal = AckJournal(directory, 1)
        journal.open()
        record_us = statistics.median(records(journal, 100_000) for _ in range(5))
        journal.close()
        without = statistics.median(startups(args.agents, None) for _ in range(3))
        with_journal = []
        for run in range(3):
            journal = AckJournal(directory, 10 + run)
            journal.open()
            with_journal.append(startups(args.agents, journal))
            journal.close()
        sync_ms = syncs(directory, 1000, 20)
    result = {
        "record_us": round(record_us, 2),
        "startup_us_without_journal": round(without, 1),
        "startup_us_with_journal": round(statistics.median(with_journal), 1),
        "fdatasync_ms_after_1000_lines_p50": round(statistics.median(sync_ms), 2),
        "fdatasync_ms_after_1000_lines_max": round(max(sync_ms), 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:40} {value}")


if __name__ == "__main__":
    main()
