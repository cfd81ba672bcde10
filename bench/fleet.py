"""How large a fleet one machine carries: a real manager, a real simulated fleet, figures and ratios.

Starts a manager (own home under bench/out/, free loopback port, SQLite, the embedded NATS server or none)
and `agentpulse simulate` in separate processes; ramps to N agents; holds the keep-alive rate for the set
time; then prints sustained keep-alives/s acknowledged, ack latency, keep-alive-to-global.db and
keep-alive-to-NATS latency (measured by a probe agent), manager CPU and RSS over all its processes, memory
per connected agent, errors and disconnections. In the same run it measures the two baselines: the CPU
limit of the message work without a server (bench/limit.py) and, with --baseline, the same fleet against
a minimal echo-ack server (bench/echo_server.py).

    .venv/bin/python bench/fleet.py --agents 10000 --interval 20 --ramp 20  # the default preset (make bench)
    .venv/bin/python bench/fleet.py --agents 50000 --interval 20 --workers 4 --ramp 60
    .venv/bin/python bench/fleet.py --agents 200000 --interval 20 --sim-batch-reads  # 12 workers, 600 s ramp
    .venv/bin/python bench/fleet.py --peak --agents 2000 --ramp 5 --duration 30 --workers 2  # as fast as acked
    .venv/bin/python bench/fleet.py --restart-storm --agents 20000  # restart the manager under the fleet

A step that fails (the manager does not start, the probe agent gets no ack, a stop that hangs) is named
in the report (`failed_step`), and the run exits 1: the bench never ends in a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import limit
import storm
from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey, KeysFile

OUT = Path(__file__).resolve().parent / "out"
LOOPBACK = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROBES = 20
PROBE_ATTEMPTS = 5  # a Wazuh agent's connects before it backs off (reference 4.4)
PROBE_RETRY_INTERVAL = 10.0  # its retry_interval
PROBE_TRIES: list[int] = []  # the attempt the probe agent was acknowledged at, per run
DEFAULT_RAMP = 20.0  # s
RAMP_RATE = 333.0  # new agents a second the default ramp brings
AGENTS_PER_WORKER = 18_000  # connections per remoted worker by default, under the 20,000 open files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def process_tree(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    pids, queue = [], [root_pid]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        queue.extend(children.get(pid, []))
    return pids


def cpu_seconds_and_rss(pids: list[int]) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            rss += int(fields[21]) * PAGE
    return cpu, rss


def tcp_kernel_memory() -> int:
    """Bytes of kernel memory held by TCP sockets on this machine (both ends of loopback connections)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            return int(parts[parts.index("mem") + 1]) * PAGE
    return 0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Sampler:
    """Samples the manager's CPU and RSS once a second in a thread."""

    root_pid: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    root_cpu: list[float] = field(default_factory=list)  # the root process alone, at the same times
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        # Per process, its last CPU reading: a process that exits keeps counting what it used (a sum over
        # the live tree alone falls when the simulator's processes end, and a window's CPU went negative).
        seen: dict[int, float] = {}
        while not self._stop.wait(1.0):
            rss = 0
            for pid in process_tree(self.root_pid):
                cpu, pid_rss = cpu_seconds_and_rss([pid])
                if pid_rss:
                    seen[pid] = max(cpu, seen.get(pid, 0.0))
                    rss += pid_rss
            self.root_cpu.append(cpu_seconds_and_rss([self.root_pid])[0])
            self.samples.append((time.monotonic(), sum(seen.values()), rss))

    def stop(self) -> None:
        self._stop.set()

    def root_window(self, start: float, end: float) -> float:
        """CPU % of the root process alone (the manager process, without its workers and nats-server)."""
        inside = [i for i, s in enumerate(self.samples) if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        first, last = inside[0], inside[-1]
        elapsed = self.samples[last][0] - self.samples[first][0]
        return (self.root_cpu[last] - self.root_cpu[first]) / elapsed * 100

    def window(self, start: float, end: float) -> tuple[float, int]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan"), max((s[2] for s in self.samples), default=0)
        cpu_percent = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 100
        return cpu_percent, max(s[2] for s in inside)


def write_home(
    home: Path,
    port: int,
    workers: int,
    nats: str,
    interval: float,
    agents: int,
    worker_nice: int | None = None,
    *,
    metrics_port: int = 0,
) -> KeysFile:
    if home.exists():
        shutil.rmtree(home)
    (home / "etc").mkdir(parents=True)
    nats_xml = {
        "none": "<nats><enabled>no</enabled></nats>",
        "embedded": "<nats><enabled>yes</enabled></nats>",
    }.get(nats, f"<nats><enabled>yes</enabled><url>{nats}</url></nats>")
    metrics_xml = (
        f"\n  <metrics><enabled>yes</enabled><host>{LOOPBACK}</host><port>{metrics_port}</port></metrics>"
        if metrics_port
        else ""
    )
    (home / "etc" / "ossec.conf").write_text(
        f"""<ossec_config>
  <remote>
    <connection>secure</connection><port>{port}</port><protocol>tcp</protocol><local_ip>{LOOPBACK}</local_ip>
    <workers>{workers}</workers>{"" if worker_nice is None else f"<worker_nice>{worker_nice}</worker_nice>"}
    <manager_keepalive><enabled>yes</enabled><interval>{max(60, interval * 3)}</interval>
      <timeout>{max(180, interval * 9)}</timeout></manager_keepalive>
  </remote>
  <global><agents_disconnection_time>{max(900, int(interval * 10))}</agents_disconnection_time></global>
  {nats_xml}{metrics_xml}
</ossec_config>
"""
    )
    keys = KeysFile([])
    keys.add_many(f"fleet-{n:06d}" for n in range(1, agents + 1))
    keys.add_many(["probe-agent"])
    (home / "etc" / "client.keys").write_text(keys.render())
    return keys


def start_manager(home: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(home / "manager.out", "wb")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentpulse",
            "start",
            "--home",
            str(home),
            "--log-level",
            os.environ.get("BENCH_LOG_LEVEL", "warning"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    state = home / "var" / "run" / "agentpulse-remoted.state"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"manager exited: {(home / 'manager.out').read_text()[-2000:]}")
        if state.exists() and f":{port}/" in state.read_text():
            return process
        time.sleep(0.1)
    raise TimeoutError("manager did not start")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 120) -> None:  # > StopGuard.deadline
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def probe_connect(entry: AgentKey, port: int, until: float) -> AgentConnection:
    """The probe agent's connection, acknowledged: refused (an overloaded manager closes it cleanly) or
    unanswered, it tries again after PROBE_RETRY_INTERVAL, as a Wazuh agent does, PROBE_ATTEMPTS times
    at most and not past `until` (monotonic: the steady window's end)."""
    failure = ""
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        if attempt > 1:
            if time.monotonic() + PROBE_RETRY_INTERVAL >= until:
                break
            await asyncio.sleep(PROBE_RETRY_INTERVAL)
        wait = max(1.0, min(60.0, until - time.monotonic()))
        try:
            connection = await asyncio.wait_for(AgentConnection.open(AgentCodec(entry), LOOPBACK, port), wait)
        except (OSError, TimeoutError) as error:
            failure = f"cannot connect to the manager: {error!r} (attempt {attempt})"
            continue
        connection.send(control.build_startup("v4.14.7"))
        try:
            reply = await connection.receive(timeout=max(1.0, min(60.0, until - time.monotonic())))
        except (OSError, TimeoutError) as error:
            failure = f"no answer to its startup: {error!r}"
            connection.close()
            continue
        if reply is not None:
            PROBE_TRIES.append(attempt)
            return connection
        failure = (
            f"the manager closed the connection instead of acknowledging the startup (attempt {attempt})"
        )
    raise storm.StepFailed(f"probe agent: {failure}")


async def probe_latencies(
    home: Path, port: int, keys: KeysFile, nats_url: str | None, duration: float
) -> tuple[list[float], list[float]]:
    """A probe agent sends keep-alives with a fresh label; we time until global.db (and NATS) show it."""
    entry = next(e for e in keys.active() if e.name == "probe-agent")
    # From now, not from its acknowledgement: a probe that had to retry must not outlast the fleet.
    probing_ends = time.monotonic() + duration
    connection = await probe_connect(entry, port, probing_ends)
    nats_seen: dict[str, float] = {}
    subscription_close = None
    if nats_url:
        import nats

        client = await nats.connect(nats_url)

        async def on_message(message: object) -> None:
            nats_seen[str(len(nats_seen))] = time.monotonic()

        subscription = await client.subscribe(f"agent.keepalive.{entry.id}", cb=on_message)  # type: ignore[arg-type]
        subscription_close = (client, subscription)
    db_latencies, nats_latencies = [], []
    db = sqlite3.connect(f"file:{home / 'queue' / 'db' / 'global.db'}?mode=ro", uri=True, timeout=5)
    gap = duration / PROBES
    for index in range(PROBES):
        if time.monotonic() > probing_ends:
            break
        marker = f"probe-{index}-{time.time_ns()}"
        before_nats = len(nats_seen)
        sent = time.monotonic()
        connection.send(
            control.build_keepalive(
                limit.UNAME, merged_sum="x" * 32, labels=(('"probe"', marker),), agent_ip=LOOPBACK
            )
        )
        deadline = min(sent + 10, probing_ends + 10)
        while time.monotonic() < deadline:
            row = db.execute(
                "SELECT 1 FROM labels WHERE id = ? AND key = '\"probe\"' AND value = ?",
                (entry.number, marker),
            ).fetchone()
            if row:
                db_latencies.append(time.monotonic() - sent)
                break
            await asyncio.sleep(0.005)
        if nats_url:
            while len(nats_seen) == before_nats and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            if len(nats_seen) > before_nats:
                nats_latencies.append(max(nats_seen.values()) - sent)
        await asyncio.sleep(max(0.0, gap - (time.monotonic() - sent)))
    db.close()
    connection.close()
    if subscription_close is not None:
        client_, subscription_ = subscription_close
        await subscription_.unsubscribe()
        await client_.close()
    return db_latencies, nats_latencies


def simulator_command(
    args: argparse.Namespace, port: int, keys_path: Path, out: Path, agents: int, duration: float
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "agentpulse",
        "simulate",
        "--manager",
        f"{LOOPBACK}:{port}",
        "--agents",
        str(agents),
        "--keys",
        str(keys_path),
        "--interval",
        str(args.interval),
        "--ramp",
        str(args.ramp),
        "--duration",
        str(duration),
        "--json-out",
        str(out),
        "--progress",
        "never",
        "--precompute",
    ]
    if args.peak:
        command.append("--peak")
    if args.sim_batch_reads:
        command.append("--batch-reads")
    if args.sim_processes:
        command += ["--processes", str(args.sim_processes)]
    if args.sim_nice:
        command = ["nice", "-n", str(args.sim_nice), *command]
    return command


def run_simulator(
    args: argparse.Namespace,
    port: int,
    keys_path: Path,
    out: Path,
    agents: int,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, object]:
    command = simulator_command(args, port, keys_path, out, agents, args.ramp + args.duration + 5)
    process = storm.launch_simulator(command, args.sim_nice, stdout=subprocess.DEVNULL)
    if on_start is not None:
        on_start(process.pid)
    try:
        process.wait(timeout=args.ramp + args.duration + 600)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    try:
        result: dict[str, object] = json.loads(out.read_text())
    except (OSError, ValueError) as error:
        raise storm.StepFailed(f"simulator: no summary ({error}); exit status {process.returncode}") from None
    return result


def disconnections(home: Path, start: float, end: float, probe_id: int) -> int:
    """Fleet disconnections recorded in the steady phase (not the teardown, not the probe agent leaving)."""
    db = sqlite3.connect(f"file:{home / 'queue' / 'db' / 'global.db'}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute(
            "SELECT COUNT(*) FROM agent_status_history WHERE to_status = 'disconnected' AND at BETWEEN ? AND ? "
            "AND agent_id != ?",
            (start, end, probe_id),
        ).fetchone()
        return int(row[0])
    finally:
        db.close()


def run_fleet(args: argparse.Namespace, baseline: bool = False) -> dict[str, object]:
    home = OUT / ("echo-home" if baseline else "manager-home")
    port = free_port()
    keys = write_home(
        home,
        port,
        args.workers,
        "none" if baseline else args.nats,
        args.interval,
        args.agents,
        args.worker_nice,
    )
    if baseline:
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve().parent / "echo_server.py"),
                "--keys",
                str(home / "etc" / "client.keys"),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(2)
    else:
        try:
            server = start_manager(home, port)
        except (RuntimeError, TimeoutError) as error:
            return {"server": "agentpulse", "agents": args.agents, "failed_step": f"manager start: {error}"}
    sampler = Sampler(server.pid)
    sampler.start()
    try:
        measured = _measure(args, home, port, keys, server, sampler, baseline)
    except storm.StepFailed as failure:
        measured = {"server": "agentpulse", "agents": args.agents, "failed_step": str(failure)}
    finally:
        sampler.stop()
        stopped = time.monotonic()
        stop_process(server)
    if not baseline:
        measured["stop_s"] = round(time.monotonic() - stopped, 1)
        log_text = (
            (home / "logs" / "ossec.log").read_text(errors="replace")
            if (home / "logs" / "ossec.log").exists()
            else ""
        )
        measured["workers_killed_at_stop"] = log_text.count("did not stop in time")
        measured["tracebacks_in_log"] = log_text.count("Traceback")
        measured["overload_lines"] = log_text.count("Overloaded: new connections paced")
        events = [line for line in log_text.splitlines() if "Events stopped" in line]
        if events:
            measured["events_at_stop"] = events[-1].split("Events stopped: ", 1)[-1]
    return measured


def _measure(
    args: argparse.Namespace,
    home: Path,
    port: int,
    keys: KeysFile,
    server: subprocess.Popen[bytes],
    sampler: Sampler,
    baseline: bool,
) -> dict[str, object]:
    idle_cpu, idle_rss = cpu_seconds_and_rss(process_tree(server.pid))
    kernel_before = tcp_kernel_memory()
    nats_url = None
    url_file = home / "var" / "run" / "nats.url"
    if not baseline and args.nats != "none":
        nats_url = url_file.read_text().strip() if url_file.exists() else args.nats
    summary_path = home / "simulate.json"
    sim_thread_result: dict[str, object] = {}
    generator: list[Sampler] = []

    def sample_generator(pid: int) -> None:
        generator.append(Sampler(pid))
        generator[0].start()

    def simulate() -> None:
        sim_thread_result.update(
            run_simulator(
                args, port, home / "etc" / "client.keys", summary_path, args.agents, sample_generator
            )
        )

    simulator = threading.Thread(target=simulate)
    simulator.start()
    with storm.QueueWatch(port) as ramp_queue:
        time.sleep(args.ramp + 2)
    per_process = storm.ProcessCpu(
        lambda: process_tree(server.pid) + (process_tree(generator[0].root_pid) if generator else [])
    )
    per_process.begin()
    steady_start = time.monotonic()
    steady_start_wall = time.time()
    kernel_during = tcp_kernel_memory()
    probes: tuple[list[float], list[float]] = ([], [])
    probe_failed = None
    if not baseline:
        try:
            probes = asyncio.run(probe_latencies(home, port, keys, nats_url, args.duration * 0.8))
        except storm.StepFailed as failure:
            # An overloaded manager may hold the probe out (new connections wait): the fleet's own figures
            # are still measured, only the probe's latencies are missing.
            probe_failed = str(failure)
    remaining = args.duration - (time.monotonic() - steady_start)
    if remaining > 0:
        time.sleep(remaining)
    steady_end = time.monotonic()
    steady_end_wall = time.time()
    cpu_per_process = per_process.end()
    cpu_percent, peak_rss = sampler.window(steady_start, steady_end)
    generator_cpu = generator[0].window(steady_start, steady_end)[0] if generator else float("nan")
    simulator.join()
    for sampler_ in generator:
        sampler_.stop()
    sim = sim_thread_result
    connected = int(sim.get("connected", 0))  # type: ignore[call-overload]
    kernel_per_side = max(0, kernel_during - kernel_before) / 2
    memory_per_agent = ((peak_rss - idle_rss) + kernel_per_side) / max(1, connected)
    result: dict[str, object] = {
        "server": "echo-ack baseline" if baseline else f"agentpulse ({args.workers} worker(s))",
        "agents": args.agents,
        "connected": connected,
        "keepalives_per_s": sim.get("keepalives_per_s"),
        "ack_latency_ms": sim.get("ack_latency_ms"),
        "steady_ack_latency_ms": sim.get("steady_ack_latency_ms"),
        "errors": sim.get("errors"),
        "cpu_percent": round(cpu_percent, 1),
        "generator_cpu_percent": round(generator_cpu, 1),
        "manager_process_cpu_percent": round(sampler.root_window(steady_start, steady_end), 1),
        "rss_mb": round(peak_rss / 2**20, 1),
        "memory_per_agent_kib": round(memory_per_agent / 1024, 2),
        "idle_cpu_s": round(idle_cpu, 2),
        "cpu_percent_per_process": cpu_per_process,
        "accept_queue_peak_during_ramp": ramp_queue.peak,
        "startup_latency_ms": sim.get("startup_latency_ms"),
        "retry_kinds": sim.get("retry_kinds"),
    }
    if not baseline:
        db_latencies, nats_latencies = probes
        result["keepalive_to_db_p99_ms"] = round(percentile(db_latencies, 0.99) * 1000, 1)
        result["keepalive_to_db_p50_ms"] = (
            round(statistics.median(db_latencies) * 1000, 1) if db_latencies else None
        )
        result["keepalive_to_nats_p99_ms"] = (
            round(percentile(nats_latencies, 0.99) * 1000, 1) if nats_latencies else None
        )
        probe = next(e for e in keys.active() if e.name == "probe-agent")
        result["disconnections"] = disconnections(home, steady_start_wall, steady_end_wall, probe.number)
        result["probe_acked_at_attempt"] = PROBE_TRIES[-1] if PROBE_TRIES else None
        if probe_failed is not None:
            result["probe_failed"] = probe_failed
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=20.0, help="keep-alive interval of the fleet (s)")
    parser.add_argument("--duration", type=float, default=60.0, help="steady phase (s)")
    parser.add_argument(
        "--ramp", type=float, help="time to connect every agent (s); default: 20, or 333 new agents a second"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="remoted worker processes of the manager; default: 1, or one per 18,000 agents (open-file limit)",
    )
    parser.add_argument("--nats", default="embedded", help="embedded | none | nats://URL")
    parser.add_argument("--peak", action="store_true", help="closed loop: each agent sends again once acked")
    parser.add_argument(
        "--baseline", action="store_true", help="also run the fleet against the echo-ack server"
    )
    parser.add_argument("--sim-processes", type=int, default=0)
    parser.add_argument(
        "--sim-sources",
        type=int,
        default=0,
        help="source addresses of the simulator (storm default: agents/50)",
    )
    parser.add_argument(
        "--sim-nice",
        type=int,
        default=0,
        help="niceness of the simulator (of its session's scheduling group: autogroup shares the CPU between "
        "sessions first): on a shared machine, let the manager's processes come first",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        help="<remote><worker_nice> of the manager (niceness of its worker processes); default: the manager's",
    )
    parser.add_argument(
        "--sim-batch-reads",
        action="store_true",
        help="the simulator reads replies once per 10 ms tick (fewer wake-ups; latencies overstated <= 10 ms)",
    )
    parser.add_argument(
        "--restart-storm",
        action="store_true",
        help="connect --agents, restart the manager (SIGTERM, start), time until all are active again",
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    # What a fleet of this size needs on this machine: the ramp that two shared cores take (measured at
    # 200k: 333 new agents a second), and enough workers to hold the connections under 20,000 files each.
    if args.ramp is None:
        args.ramp = max(DEFAULT_RAMP, args.agents / RAMP_RATE)
    if args.workers is None:
        args.workers = max(1, math.ceil(args.agents / AGENTS_PER_WORKER))
    OUT.mkdir(exist_ok=True)
    if args.restart_storm:
        result = storm.restart_storm(
            args,
            write_home=write_home,
            start_manager=start_manager,
            simulator_command=lambda port, keys, out, duration: [
                *simulator_command(args, port, keys, out, args.agents, duration),
                # A real fleet comes from many addresses: 50 agents per source address, not 4,000
                # behind one (which max_unauthenticated_per_ip, 64, treats as one client).
                *("--sources", str(args.sim_sources or max(1, args.agents // 50))),
            ],
            process_tree=process_tree,
            out=OUT,
            free_port=free_port,
        )
        result["command"] = " ".join(sys.argv)
        storm.print_storm(result)
        if args.json_out:
            args.json_out.write_text(json.dumps(result, indent=2))
        return 1 if "failed_step" in result or result.get("refused") else 0
    ceiling = limit.measure(1000, 3.0)
    results = [run_fleet(args)]
    if args.baseline:
        results.append(run_fleet(args, baseline=True))
    report = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": " ".join(sys.argv),
        "settings": {"workers": args.workers, "ramp_s": args.ramp, "duration_s": args.duration},
        "limit_keepalives_per_s_one_core": round(ceiling["keepalives_per_s"]),
        "results": results,
    }
    for result in results:
        if "failed_step" in result:
            print(f"{result['server']}: FAILED at {result['failed_step']}", file=sys.stderr)
        rate = float(result.get("keepalives_per_s") or 0)  # type: ignore[arg-type]
        cpu = float(result.get("cpu_percent") or 0) / 100  # type: ignore[arg-type]
        result["ratio_to_limit"] = round(rate / ceiling["keepalives_per_s"], 3)
        # What a keep-alive costs the server, all its processes included, against the bare message work.
        result["cpu_us_per_keepalive"] = round(cpu / rate * 1e6, 1) if rate else None
        result["efficiency_vs_limit"] = (
            round(rate / cpu / ceiling["keepalives_per_s"], 3) if cpu and rate else None
        )
    if args.baseline:
        manager_rate = float(results[0].get("keepalives_per_s") or 0)  # type: ignore[arg-type]
        echo_rate = float(results[1].get("keepalives_per_s") or 1)  # type: ignore[arg-type]
        report["ratio_to_echo_baseline"] = round(manager_rate / echo_rate, 3)
        # At a fixed offered rate both keep up; what differs is the CPU each spends for it.
        manager_cpu = float(results[0].get("cpu_us_per_keepalive") or 0)  # type: ignore[arg-type]
        echo_cpu = float(results[1].get("cpu_us_per_keepalive") or 0)  # type: ignore[arg-type]
        report["cpu_ratio_to_echo_baseline"] = round(manager_cpu / echo_cpu, 2) if echo_cpu else None
    print(json.dumps(report, indent=2))
    print()
    print(
        "| server | agents | connected | keep-alives/s | steady ack p50/p99/max ms | to DB p99 ms | to NATS p99 ms "
        "| CPU % | generator CPU % | CPU us/keep-alive | RSS MB | KiB/agent | errors | disconnections | rate / limit "
        "| efficiency vs limit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        latency = result.get("steady_ack_latency_ms") or result.get("ack_latency_ms") or {}
        assert isinstance(latency, dict)
        print(
            f"| {result.get('server')} | {result.get('agents')} | {result.get('connected')} | "
            f"{float(result.get('keepalives_per_s') or 0):,.0f} | "  # type: ignore[arg-type]
            f"{latency.get('p50')}/{latency.get('p99')}/{latency.get('max')} | "
            f"{result.get('keepalive_to_db_p99_ms', '-')} | {result.get('keepalive_to_nats_p99_ms', '-')} | "
            f"{result.get('cpu_percent')} | {result.get('generator_cpu_percent')} | {result.get('cpu_us_per_keepalive')} | {result.get('rss_mb')} | "
            f"{result.get('memory_per_agent_kib')} | {result.get('errors')} | {result.get('disconnections', '-')} | "
            f"{result.get('ratio_to_limit')} | {result.get('efficiency_vs_limit')} |"
        )
    print(f"\nlimit: {ceiling['keepalives_per_s']:,.0f} keep-alives/s on one core (bench/limit.py)")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    failed = any(
        r.get("errors") or r.get("disconnections") or r.get("failed_step")
        for r in results
        if isinstance(r, dict)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
