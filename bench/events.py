"""NATS events throughput: status events through the outbox into JetStream, keep-alive events to a subscriber.

A real manager process and a real nats-server (JetStream, loopback, temporary store), wire-level agents in
this process.

1. Status events: while NATS is down, agents cycle startup -> keep-alive -> shutdown (three transitions a
   cycle), so the outbox fills; then NATS starts and the manager drains the backlog. The rate is the stream's
   own clock: messages / (timestamp of the last - timestamp of the first), so the reconnect wait is not in it.
2. Keep-alive events: NATS up, agents send keep-alives at a fixed total rate without waiting for the acks; a
   subscriber matches each event (agent id, sequence) to the moment its keep-alive left the agent, so the
   latency covers agent -> manager -> batch -> NATS -> subscriber.

3. Agent events: `agentpulse simulate` (a separate process) runs 1,000 agents sending keep-alives and
   `--events-per-agent` events a second (the syslog/FIM/inventory mix) to a manager with its remoted
   workers; first a keep-alives-only run, then the same fleet with events, in the same invocation. Reported:
   events/s into JetStream (the stream's own store times) and to a core-NATS subscriber, CPU seconds per
   event of each process (manager, each worker, nats-server, simulator, this process: its subscriber and
   probes; /proc and rusage), the events/s that CPU per event allows on two idle cores, p99
   agent-to-subscriber latency measured on 20 probe agents of this process that stamp their events, and
   the keep-alive ack p99 of both runs (the simulator's). `--events-per-agent 5,15,30` runs several rates
   after the one keep-alives-only run. The subscriber that counts every event is a bare NATS protocol
   reader (it counts messages, it decodes nothing), so that counting 30,000 events/s does not take a
   core of the two the run is on; the probes' own subscriptions (their subjects only) use nats-py.

    .venv/bin/python bench/events.py                         # 1000 agents, 10 cycles, 5000 keep-alives/s for 10 s
    .venv/bin/python bench/events.py --agents 2000 --cycles 5 --keepalive-rate 10000
    .venv/bin/python bench/events.py --only agent-events --events-per-agent 30 --event-duration 20
    .venv/bin/python bench/events.py --only agent-events --events-per-agent 5,15,30 --event-duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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

__all__ = ["agent_events_bench"]

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


PROBES = 20
PROBE_RATE = 10.0  # stamped events per probe agent per second


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def cpu_snapshot(processes: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in processes.items()}


class CountingSubscriber(asyncio.Protocol):
    """A bare NATS client that subscribes to one subject and counts the messages (MSG and HMSG), answers
    PINGs and decodes nothing: a few microseconds an event, where nats-py's callbacks cost tens."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.count = 0
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.skip = 0  # bytes of a message body (and its CRLF) still to come

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        connect = json.dumps({"verbose": False, "pedantic": False, "headers": True, "protocol": 1})
        transport.write(f"CONNECT {connect}\r\nSUB {self.subject} 1\r\nPING\r\n".encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at = 0
        end = len(buffer)
        while at < end:
            if self.skip:
                step = min(self.skip, end - at)
                self.skip -= step
                at += step
                continue
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                break
            op = bytes(buffer[at:line_end])
            at = line_end + 2
            if op.startswith((b"MSG ", b"HMSG ")):
                self.count += 1
                self.skip = int(op.rsplit(b" ", 1)[1]) + 2
            elif op == b"PING" and self.transport is not None:
                self.transport.write(b"PONG\r\n")
        del buffer[:at]

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def counting_subscriber(url: str, subject: str) -> CountingSubscriber:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: CountingSubscriber(subject), host, int(port))
    await asyncio.sleep(0.2)  # subscribed (the server has read the SUB before any event is sent)
    return protocol


async def probe_events(
    connections: list[AgentConnection], until: float, latencies: list[float], url: str
) -> int:
    """PROBES agents of this process send stamped events; a subscriber to their subjects only times
    agent -> subscriber."""
    sent_at: dict[str, float] = {}

    async def on_event(msg: Msg) -> None:
        text = json.loads(msg.data).get("text") or ""
        start = sent_at.pop(text.split(" ", 1)[0], None)
        if start is not None:
            latencies.append(time.perf_counter() - start)

    nc = await nats.connect(url)
    for connection in connections:
        await nc.subscribe(f"agent.events.{connection.codec.key.number:03d}.logcollector", cb=on_event)
    await nc.flush()
    sent = 0
    try:
        while time.monotonic() < until:
            for index, connection in enumerate(connections):
                token = f"probe-{index}-{sent}"
                sent_at[token] = time.perf_counter()
                connection.send(f"1:/var/log/probe:{token} probe event".encode())
                sent += 1
            await asyncio.sleep(1.0 / PROBE_RATE)
        await asyncio.sleep(2.0)
    finally:
        for connection in connections:
            connection.close()
        await nc.close()
    return sent


KEEPALIVE_PROBES = 20  # agents of this process that send only keep-alives, one a second, timing each ack


async def keepalive_probes(connections: list[AgentConnection], until: float, latencies: list[float]) -> None:
    """Agents that send nothing but keep-alives: their ack latency is what event load must not hurt."""

    async def one(connection: AgentConnection) -> None:
        while time.monotonic() < until:
            start = time.perf_counter()
            try:
                await asyncio.wait_for(request(connection, KEEPALIVE), 30.0)
            except (TimeoutError, RuntimeError, ConnectionError):
                latencies.append(30.0)
                return
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - start)))

    await asyncio.gather(*(one(c) for c in connections))


DRAIN_WAIT = 90.0  # seconds, at most, for JetStream to hold every event sent once the simulator stopped


async def stream_count(js: Any) -> int:
    try:
        return int((await js.stream_info("AGENT_EVENTS")).state.messages)
    except nats.js.errors.NotFoundError:
        return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


async def fleet_run(
    root: Path, name: str, agents: int, events_per_agent: float, duration: float, workers: int
) -> dict[str, object]:
    nats_server = NatsServer(root / f"nats-{name}" / "store")
    nats_server.start()
    manager = ManagerProcess(
        root / f"{name}-home",
        settings=ManagerSettings(
            nats=f"<nats><enabled>yes</enabled><url>{nats_server.url}</url></nats>",
            flush_interval=0.5,
            workers=workers,
            connection_grace=30,
        ),
    )
    manager.add_agents(agents)
    probe_keys = manager.add_agents(PROBES, prefix="probe")
    quiet_keys = manager.add_agents(KEEPALIVE_PROBES, prefix="quiet")
    manager.start()
    sub = await nats.connect(nats_server.url)  # for the stream's figures at the end
    counter = await counting_subscriber(nats_server.url, "agent.events.>")
    probes_connected = await connect(manager, probe_keys)  # before the load: their startups are not timed
    await asyncio.gather(*(request(c, STARTUP) for c in probes_connected))
    quiet_connected = await connect(manager, quiet_keys)
    await asyncio.gather(*(request(c, STARTUP) for c in quiet_connected))
    ramp = 5.0
    command = [
        str(Path(sys.executable).parent / "agentpulse"),
        "simulate",
        "--manager",
        f"{LOOPBACK}:{manager.port}",
        "--agents",
        str(agents),
        "--keys",
        str(manager.home.client_keys),
        "--interval",
        "10",
        "--ramp",
        str(ramp),
        "--duration",
        str(duration + ramp),
        "--events-per-agent",
        str(events_per_agent),
        "--progress",
        "never",
        "--processes",
        "1",
    ]
    simulator = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert manager.process is not None and nats_server.process is not None
    await asyncio.sleep(ramp)
    processes = {"manager": manager.process.pid, "nats-server": nats_server.process.pid}
    for index, pid in enumerate(children(manager.process.pid)):
        processes[f"worker {index + 1}"] = pid
    js = sub.jetstream()
    stored_before = await stream_count(js)
    # The ramp's events and CPU are both left out: counted from here, until JetStream holds them all.
    before_cpu, before_count, started = cpu_snapshot(processes), counter.count, time.monotonic()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    latencies: list[float] = []
    probes = 0
    quiet_latencies: list[float] = []
    quiet = asyncio.ensure_future(keepalive_probes(quiet_connected, started + duration - 2, quiet_latencies))
    if events_per_agent:
        probes = await probe_events(probes_connected, started + duration - 2, latencies, nats_server.url)
    await quiet
    for connection in quiet_connected:
        connection.close()
    stdout, _ = await simulator.communicate()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the simulator, whole run with its ramp
    simulator_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    summary = json.loads(stdout)
    # The manager's CPU counts until JetStream holds everything sent (a backlog is drained after the
    # simulator stops), and is divided by the events stored meanwhile: what each event cost.
    expected = int(summary["events_sent"]) + probes  # a fresh stream each run
    drain_deadline = time.monotonic() + DRAIN_WAIT
    while await stream_count(js) < expected and time.monotonic() < drain_deadline:
        await asyncio.sleep(0.5)
    stored_after = await stream_count(js)
    after_cpu, after_count = cpu_snapshot(processes), counter.count
    elapsed = time.monotonic() - started  # the load, then the drain: what the events/s are over
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    stored = 0
    store_rate = 0.0
    try:
        info = await js.stream_info("AGENT_EVENTS")
        stored = info.state.messages
        if stored > 1:
            first = await js.get_msg("AGENT_EVENTS", max(1, stored // 10))
            last = await js.get_msg("AGENT_EVENTS", stored - stored // 10)
            store_rate = (stored - 2 * (stored // 10)) / max(1e-6, _stored_at(last) - _stored_at(first))
    except nats.js.errors.NotFoundError:
        pass
    await sub.close()
    await counter.close()
    manager.stop()
    nats_server.stop()
    events = max(1, stored_after - stored_before)
    cpu = {name: after_cpu[name] - before_cpu[name] for name in processes}
    cpu["simulator (incl. ramp)"] = simulator_cpu
    cpu["bench (subscriber, probes)"] = (self_after.ru_utime + self_after.ru_stime) - (
        self_before.ru_utime + self_before.ru_stime
    )
    return {
        "events_sent": summary["events_sent"],
        "undelivered_agents": summary.get("undelivered_agents", 0),
        "events_per_s_subscriber": (after_count - before_count) / elapsed,
        "complete": stored_after >= expected,
        "events_per_s_jetstream": store_rate,
        "stored": stored,
        "probes": probes,
        "probe_p50_ms": percentile(latencies, 0.5) * 1000,
        "probe_p99_ms": percentile(latencies, 0.99) * 1000,
        "ack_p99_ms": summary["steady_ack_latency_ms"].get("p99"),
        "quiet_ack_p50_ms": round(percentile(quiet_latencies, 0.5) * 1000, 1),
        "quiet_ack_p99_ms": round(percentile(quiet_latencies, 0.99) * 1000, 1),
        "ack_p50_ms": summary["steady_ack_latency_ms"].get("p50"),
        "keepalives_acked": summary["keepalives_acked"],
        "errors": summary["error_kinds"],
        "cpu": cpu,
        "elapsed": elapsed,
        "events": events,
    }


async def agent_events_bench(
    root: Path, agents: int, rates: list[float], duration: float, workers: int
) -> str:
    base = await fleet_run(root, "ka-only", agents, 0.0, duration, workers)
    lines = [
        f"agent events, {agents} agents, syslog/fim/inventory mix, {workers} workers, {duration:.0f} s a run, "
        f"load average at the start {' '.join(f'{v:.2f}' for v in os.getloadavg())}:",
        f"  keep-alives only: ack p50/p99 {base['ack_p50_ms']}/{base['ack_p99_ms']} ms, "
        f"{KEEPALIVE_PROBES} keep-alive-only probes {base['quiet_ack_p50_ms']}/{base['quiet_ack_p99_ms']} ms, "
        f"simulator errors {base['errors']}",
    ]
    for rate in rates:
        loaded = await fleet_run(root, f"events-{rate:g}", agents, rate, duration, workers)
        events = max(1, int(loaded["events"]))  # type: ignore[call-overload]
        cpu = loaded["cpu"]
        assert isinstance(cpu, dict)
        per_event = ", ".join(f"{name} {seconds / events * 1e6:.0f} us" for name, seconds in cpu.items())
        total_us = sum(cpu.values()) / events * 1e6
        lines += [
            f"  {rate:g}/s per agent (offered {agents * rate:,.0f}/s), load average now "
            f"{os.getloadavg()[0]:.2f}:",
            f"    sent by the simulator {loaded['events_sent']:,} (agents whose last keep-alive was not acked at its end: "
            f"{loaded['undelivered_agents']:,}); to the subscriber "
            f"{loaded['events_per_s_subscriber']:,.0f} events/s (after the ramp, until all were stored); "
            f"into JetStream "
            f"{loaded['events_per_s_jetstream']:,.0f} events/s (store times, middle 80 %); stream holds "
            f"{loaded['stored']:,}{'' if loaded['complete'] else ' (NOT all of them within the drain wait)'}",
            f"    CPU per event stored (until all were): {per_event}; all processes {total_us:.0f} us, so two idle cores would "
            f"carry {2e6 / total_us:,.0f} events/s",
            f"    agent -> subscriber ({loaded['probes']} stamped probe events): p50 "
            f"{loaded['probe_p50_ms']:.1f} ms, p99 {loaded['probe_p99_ms']:.1f} ms",
            f"    keep-alive ack p50/p99 {loaded['ack_p50_ms']}/{loaded['ack_p99_ms']} ms "
            f"(keep-alives only {base['ack_p50_ms']}/{base['ack_p99_ms']} ms); simulator errors "
            f"{loaded['errors']}",
            f"    agents sending only keep-alives ({KEEPALIVE_PROBES}, one a second): ack p50/p99 "
            f"{loaded['quiet_ack_p50_ms']}/{loaded['quiet_ack_p99_ms']} ms (keep-alives-only run "
            f"{base['quiet_ack_p50_ms']}/{base['quiet_ack_p99_ms']} ms)",
        ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=10, help="startup/keep-alive/shutdown cycles per agent")
    parser.add_argument("--keepalive-rate", type=int, default=5000, help="keep-alives per second, all agents")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of keep-alive load")
    parser.add_argument(
        "--events-per-agent",
        default="30",
        help="agent events per agent per second; a comma list runs each rate (one keep-alives-only run)",
    )
    parser.add_argument("--event-duration", type=float, default=20.0, help="seconds of each agent-events run")
    parser.add_argument("--workers", type=int, default=0, help="remoted workers (0: one per core)")
    parser.add_argument(
        "--only", choices=("status", "keepalive", "agent-events"), help="run one part (default: all three)"
    )
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="agentpulse-events-bench-") as tmp:
        root = Path(tmp)
        if args.only in (None, "status"):
            print(await status_bench(root, args.agents, args.cycles), flush=True)
        if args.only in (None, "keepalive"):
            print(await keepalive_bench(root, args.agents, args.keepalive_rate, args.duration), flush=True)
        if args.only in (None, "agent-events"):
            print(
                await agent_events_bench(
                    root,
                    args.agents,
                    [float(rate) for rate in args.events_per_agent.split(",")],
                    args.event_duration,
                    workers,
                ),
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
