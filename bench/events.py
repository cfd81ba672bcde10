"""NATS events throughput: status events through the outbox into JetStream, keep-alive events to a subscriber.

A real manager process and a real nats-server (JetStream, loopback, temporary store), wire-level agents in
this process.

1. Status events: while NATS is down, agents cycle startup -> keep-alive -> shutdown (three transitions a
   cycle), so the outbox fills; then NATS starts and the manager drains the backlog. The rate is the stream's
   own clock: messages / (timestamp of the last - timestamp of the first), so the reconnect wait is not in it.
2. Keep-alive events: NATS up, agents send keep-alives at a fixed total rate without waiting for the acks; a
   subscriber matches each event (agent id, sequence) to the moment its keep-alive left the agent, so the
   latency covers agent -> manager -> batch -> NATS -> subscriber.

    .venv/bin/python bench/events.py                         # 1000 agents, 10 cycles, 5000 keep-alives/s for 10 s
    .venv/bin/python bench/events.py --agents 2000 --cycles 5 --keepalive-rate 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from nats.js.api import RawStreamMsg  # noqa: E402
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings  # noqa: E402
from tests.events.natsserver import NatsServer  # noqa: E402

from agentpulse.agent.connection import AgentCodec, AgentConnection  # noqa: E402
from agentpulse.wire import control  # noqa: E402
from agentpulse.wire.keys import AgentKey  # noqa: E402

KEEPALIVE = control.build_keepalive(
    "Linux |bench-host |6.1.0-18-amd64 |#1 SMP Debian 6.1.76-1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)]"
    " - Wazuh v4.14.7",
    merged_sum="4a8724b20dee0124ff9656783c490c4e",
    agent_ip="127.0.0.1",
)
STARTUP = control.build_startup("v4.14.7")


def settings(url: str) -> ManagerSettings:
    return ManagerSettings(nats=f"<nats><enabled>yes</enabled><url>{url}</url></nats>", flush_interval=0.2)


async def connect(manager: ManagerProcess, keys: list[AgentKey]) -> list[AgentConnection]:
    connections: list[AgentConnection] = []
    for start in range(0, len(keys), 200):
        chunk = keys[start : start + 200]
        connections += await asyncio.gather(
            *(AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port) for key in chunk)
        )
    return connections


async def request(connection: AgentConnection, payload: bytes) -> None:
    connection.send(payload)
    reply = await connection.receive()
    if reply != control.Ack():
        raise RuntimeError(f"expected an ack, got {reply!r}")


def outbox_size(manager: ManagerProcess) -> int:
    return int(manager.query("SELECT COUNT(*) FROM event_outbox")[0][0])


async def stream_rate(url: str, expected: int, timeout: float) -> tuple[int, float]:
    """Wait until the stream holds `expected` messages; return (count, seconds between first and last)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            try:
                count = (await js.stream_info("AGENT_STATUS")).state.messages
            except nats.js.errors.NotFoundError:
                count = 0
            if count >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        first = await js.get_msg("AGENT_STATUS", 1)
        last = await js.get_msg("AGENT_STATUS", count)
        return count, _stored_at(last) - _stored_at(first)
    finally:
        await nc.close()


def _stored_at(message: RawStreamMsg) -> float:
    """When JetStream stored the message (its own clock)."""
    if message.time is None:
        raise RuntimeError("this nats-py gives no store time")
    return message.time.timestamp()


async def status_bench(root: Path, agents: int, cycles: int) -> str:
    nats_server = NatsServer(root / "nats" / "store")  # down while the backlog builds
    manager = ManagerProcess(root / "status-home", settings=settings(nats_server.url))
    keys = manager.add_agents(agents)
    manager.start()
    try:
        connections = await connect(manager, keys)
        for _ in range(cycles):
            await asyncio.gather(*(request(c, STARTUP) for c in connections))
            await asyncio.gather(*(request(c, KEEPALIVE) for c in connections))
            for c in connections:
                c.send(control.SHUTDOWN)
        expected = 3 * agents * cycles
        deadline = time.monotonic() + 120
        while outbox_size(manager) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbox holds {outbox_size(manager)} of {expected}")
            await asyncio.sleep(0.2)
        for c in connections:
            c.close()
        nats_server.start()
        count, seconds = await stream_rate(nats_server.url, expected, timeout=300)
        if count < expected:
            raise RuntimeError(f"only {count} of {expected} status events reached the stream")
        rate = count / seconds if seconds > 0 else float("inf")
        return (
            f"status events, outbox -> JetStream (backlog of {count} from {agents} agents, pipelined acks + KV): "
            f"{rate:,.0f} events/s ({seconds:.2f} s by the stream's store times)"
        )
    finally:
        manager.stop()
        nats_server.stop()


async def keepalive_bench(root: Path, agents: int, rate: int, duration: float) -> str:
    nats_server = NatsServer(root / "nats-ka" / "store")
    nats_server.start()
    manager = ManagerProcess(root / "keepalive-home", settings=settings(nats_server.url))
    keys = manager.add_agents(agents)
    manager.start()
    sent_at: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    arrivals: list[float] = []

    async def on_event(msg: Msg) -> None:
        now = time.perf_counter()
        event = json.loads(msg.data)
        start = sent_at.get((event["agent_id"], event["sequence"]))
        if start is not None:
            latencies.append(now - start)
            arrivals.append(now)

    nc = await nats.connect(nats_server.url)
    try:
        await nc.subscribe("agent.keepalive.*", cb=on_event)
        await nc.flush()
        connections = await connect(manager, keys)
        await asyncio.gather(*(request(c, STARTUP) for c in connections))
        tokens = [f"{key.number:03d}" for key in keys]
        counts = [0] * agents
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        total = int(rate * duration)
        sent = 0
        cursor = 0
        began = time.perf_counter()
        while sent < total:
            for _ in range(min(per_tick, total - sent)):
                index = cursor % agents
                cursor += 1
                counts[index] += 1
                sent_at[(tokens[index], counts[index])] = time.perf_counter()
                connections[index].send(KEEPALIVE)
                sent += 1
            next_tick = began + (sent / per_tick) * tick
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        sending = time.perf_counter() - began
        deadline = time.monotonic() + 30
        while len(latencies) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in connections:
            c.close()
    finally:
        await nc.close()
        manager.stop()
        nats_server.stop()
    if not latencies:
        raise RuntimeError("no keep-alive event arrived")
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    span = max(arrivals) - min(arrivals) or 1.0
    return (
        f"keep-alive events, agent -> manager -> core NATS -> subscriber ({agents} agents, offered {rate:,}/s for "
        f"{duration:.0f} s, sent in {sending:.1f} s): {len(latencies):,} of {sent:,} received, "
        f"{len(latencies) / span:,.0f} events/s, latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=10, help="startup/keep-alive/shutdown cycles per agent")
    parser.add_argument("--keepalive-rate", type=int, default=5000, help="keep-alives per second, all agents")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of keep-alive load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentpulse-events-bench-") as tmp:
        root = Path(tmp)
        print(await status_bench(root, args.agents, args.cycles), flush=True)
        print(await keepalive_bench(root, args.agents, args.keepalive_rate, args.duration), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
