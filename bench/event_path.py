"""The agent-event path of one remoted process, without sockets: CPU microseconds per event, stage by stage.

Real `Remoted`, `Session`, `EventIntake` and `EventPublisher` objects, a real nats-server (JetStream, a
temporary store), agents already connected (startup acked); then event frames of the simulator's
syslog/FIM/inventory mix fed to `Session.data_received`, a few hundred per loop iteration, until JetStream
acknowledged every one. Reported, per event:

- `generator`: what the simulator spends sealing one event frame (`simulator.eventgen.seal_event`);
- `remoted, no publishing`: frame, decrypt, inflate, checksum, parse, dispatch (intake off);
- `remoted + publisher`: the same with the intake on: the JSON body, the spool, nats-py, the acks;
  the difference with the line above is what publishing costs;
- `nats-server`: its CPU (from /proc) over the publishing stage, divided by the events.

A figure that survives a shared machine better than events/s: CPU time, not wall time. `--profile` runs
the publishing stage under cProfile and prints where its time goes. Two builds in one go:

    .venv/bin/python bench/event_path.py [--agents 1000] [--events-per-agent 30] [--repeat 3] [--profile]
    PYTHONPATH=<other checkout>/src .venv/bin/python bench/event_path.py ...  # the same, another build
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.events.natsserver import NatsServer  # noqa: E402

from agentpulse.agent.connection import AgentCodec  # noqa: E402
from agentpulse.config import Config, RemoteConfig  # noqa: E402
from agentpulse.config.manager import NatsConfig  # noqa: E402
from agentpulse.paths import Home  # noqa: E402
from agentpulse.remoted.intake import build_intake  # noqa: E402
from agentpulse.remoted.keystore import KeyStore  # noqa: E402
from agentpulse.remoted.server import Remoted  # noqa: E402
from agentpulse.remoted.session import Session  # noqa: E402
from agentpulse.simulator.eventgen import payload_pool, seal_event  # noqa: E402

try:  # this build compresses each pool payload once (a build before it compressed every send)
    from agentpulse.simulator.eventgen import deflated
except ImportError:  # pragma: no cover - another build
    deflated = None
from agentpulse.wire import control  # noqa: E402
from agentpulse.wire.keys import AgentKey, KeysFile  # noqa: E402
from keepalive_path import NullGrace, NullStore, NullTransport  # noqa: E402

PER_ITERATION = 300  # frames handed to data_received between two loop iterations (~30,000/s at 100 Hz)
WAIT = 120.0  # seconds, at most, for JetStream to acknowledge everything
PACE = 0.01  # seconds between two iterations' worth of frames


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fleet(remoted: Remoted, keys: list[AgentKey]) -> tuple[list[Session], list[AgentCodec]]:
    """A connected session per key, startup accepted, and the codec of each agent."""
    startup = control.build_startup("v4.14.7")
    sessions, codecs = [], []
    for index, key in enumerate(keys):
        session = Session(remoted)
        session.connection_made(NullTransport(index))
        codec = AgentCodec(key)
        session.data_received(codec.seal(startup))
        sessions.append(session)
        codecs.append(codec)
    return sessions, codecs


def remoted_for(config: Config, agents: int, intake: Any) -> tuple[Remoted, list[AgentKey]]:
    keys_file = KeysFile([])
    entries = keys_file.add_many(f"bench-{n:06d}" for n in range(agents))
    keys = KeyStore()
    remoted = Remoted(config, keys, NullStore(), NullGrace(), intake=intake)
    remoted.keys_changed(keys.load(keys_file))
    return remoted, entries


def seal_all(codecs: list[AgentCodec], per_agent: int, pool: list[bytes]) -> tuple[list[list[bytes]], float]:
    """Every agent's frames, round by round; and the CPU seconds sealing them took (the generator)."""
    frames: list[list[bytes]] = [[] for _ in codecs]
    compressed = [deflated(payload) for payload in pool] if deflated is not None else None
    started = time.process_time()
    at = 0
    for _ in range(per_agent):
        for index, codec in enumerate(codecs):
            if compressed is not None:
                frames[index].append(seal_event(codec, pool[at], compressed[at]))
            else:
                frames[index].append(seal_event(codec, pool[at]))
            at = (at + 1) % len(pool)
    return frames, time.process_time() - started


def interleaved(sessions: list[Session], frames: list[list[bytes]]) -> list[tuple[Session, bytes]]:
    rounds = len(frames[0])
    return [(sessions[i], frames[i][r]) for r in range(rounds) for i in range(len(sessions))]


async def publish_stage(
    root: Path, url: str, agents: int, per_agent: int, pool: list[bytes], profile: cProfile.Profile | None
) -> dict[str, float]:
    config = Config(remote=RemoteConfig(), nats=NatsConfig(enabled=True, urls=(url,)))
    home = Home(root)
    intake = build_intake(config, home, 0, 1)
    assert intake is not None and intake.publisher is not None
    remoted, keys = remoted_for(config, agents, intake)
    await intake.start()
    publisher = intake.publisher
    deadline = time.monotonic() + 20
    while not publisher.nc.is_connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    sessions, codecs = fleet(remoted, keys)
    frames, _ = seal_all(codecs, per_agent, pool)
    work = interleaved(sessions, frames)
    total = len(work)
    # Warm up: the stream exists, the first batch is acknowledged.
    warm = sessions[0], seal_event(codecs[0], pool[0])
    warm[0].data_received(warm[1])
    while publisher.counters.published < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    published_before = publisher.counters.published
    nats_pid = NATS_PID[0]
    nats_before, wall = cpu_seconds(nats_pid), time.perf_counter()
    cpu = time.process_time()
    if profile is not None:
        profile.enable()
    for start in range(0, total, PER_ITERATION):
        for session, frame in work[start : start + PER_ITERATION]:
            session.data_received(frame)
        await asyncio.sleep(PACE)  # at most ~30,000/s: the steady state, not a backlog to catch up
    end = time.monotonic() + WAIT
    while publisher.counters.published - published_before < total and time.monotonic() < end:
        await asyncio.sleep(0.02)
    if profile is not None:
        profile.disable()
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    nats_cpu = cpu_seconds(nats_pid) - nats_before
    published = publisher.counters.published - published_before
    # Bounded: a build before this one could hang in its stop (a missed cancellation).
    await asyncio.wait([asyncio.ensure_future(intake.stop())], timeout=10)
    if published < total:
        raise RuntimeError(f"only {published} of {total} events acknowledged within {WAIT:.0f} s")
    return {"cpu": cpu, "wall": wall, "nats_cpu": nats_cpu}


NATS_PID = [0]


def handle_stage(agents: int, per_agent: int, pool: list[bytes]) -> tuple[float, float]:
    """(generator, remoted without publishing) CPU seconds for agents x per_agent events."""
    remoted, keys = remoted_for(Config(remote=RemoteConfig()), agents, None)
    sessions, codecs = fleet(remoted, keys)
    frames, sealing = seal_all(codecs, per_agent, pool)
    work = interleaved(sessions, frames)
    started = time.process_time()
    for session, frame in work:
        session.data_received(frame)
    return sealing, time.process_time() - started


def run_once(
    root: Path, url: str, args: argparse.Namespace, profile: cProfile.Profile | None
) -> dict[str, float]:
    pool = payload_pool(("syslog", "fim", "inventory"))
    total = args.agents * args.events_per_agent
    sealing, handling = handle_stage(args.agents, args.events_per_agent, pool)
    import uvloop

    stage = uvloop.run(publish_stage(root, url, args.agents, args.events_per_agent, pool, profile))
    us = 1e6 / total
    return {
        "generator_us": sealing * us,
        "remoted_no_publishing_us": handling * us,
        "remoted_publisher_us": stage["cpu"] * us,
        "nats_server_us": stage["nats_cpu"] * us,
        "publishing_wall_s": stage["wall"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--events-per-agent", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the publishing stage (last run)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="agentpulse-event-path-") as tmp:
        for index in range(args.repeat):
            server = NatsServer(Path(tmp) / f"nats-{index}" / "store")
            server.start()
            assert server.process is not None
            NATS_PID[0] = server.process.pid
            try:
                last = index == args.repeat - 1
                runs.append(
                    run_once(Path(tmp) / f"home-{index}", server.url, args, profile if last else None)
                )
            finally:
                server.stop()
    result: dict[str, Any] = {
        "events_per_run": args.agents * args.events_per_agent,
        "load_average": os.getloadavg(),
    }
    for name in runs[0]:
        result[name + "_median"] = round(statistics.median(run[name] for run in runs), 1)
    total = (
        result["generator_us_median"]
        + result["remoted_publisher_us_median"]
        + result["nats_server_us_median"]
    )
    result["all_processes_us"] = round(total, 1)
    result["events_per_s_two_idle_cores"] = round(2e6 / total) if total else None
    result["runs"] = [{k: round(v, 1) for k, v in run.items()} for run in runs]
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    if profile is not None:
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("tottime").print_stats(35)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
