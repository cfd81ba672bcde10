"""The restart storm (`bench/fleet.py --restart-storm`), and what each process of a run costs.

N agents connect; once all are active the manager is restarted (SIGTERM, then start on the same home and
port) while the fleet keeps running; the figures are the stop time, the time until all N are active
again, and how often agents were refused or timed out on the way (the simulator's retry counts). Each
step that fails is named in the report instead of ending the bench in a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL = 0.5  # seconds between two counts of active agents
CURVE_EVERY = 15.0  # seconds between two points of the recovery curve


class StepFailed(Exception):
    """A step of the bench did not complete: the message says which and why."""


def label_of(pid: int) -> str:
    """What a process of the run is, from its command line: manager, remoted worker N, nats-server..."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    words = [part.decode(errors="replace") for part in argv if part]
    if any(word.endswith("nats-server") for word in words):
        return "nats-server"
    if "worker" in words and "--index" in words:
        return f"remoted worker {words[words.index('--index') + 1]}"
    if "simulate" in words or any("multiprocessing" in word for word in words):
        return "simulator"  # its fleet processes are multiprocessing's spawned children
    if "start" in words:
        return "manager"
    return os.path.basename(words[0]) if words else f"pid {pid}"


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


@dataclass
class ProcessCpu:
    """CPU % per process (by label) between `begin()` and `end()`, for the processes of some trees."""

    tree: Callable[[], list[int]]
    start: dict[int, float] = field(default_factory=dict)
    started_at: float = 0.0

    def begin(self) -> None:
        self.start = {pid: cpu_seconds(pid) for pid in self.tree()}
        self.started_at = time.monotonic()

    def end(self) -> dict[str, float]:
        elapsed = max(1e-6, time.monotonic() - self.started_at)
        usage: dict[str, float] = {}
        for pid in self.tree():
            label = label_of(pid)
            spent = cpu_seconds(pid) - self.start.get(pid, 0.0)
            if spent < 0:  # it ended meanwhile (its CPU reads as 0): what it used is not known here
                continue
            usage[label] = usage.get(label, 0.0) + spent / elapsed * 100
        return {label: round(value, 1) for label, value in sorted(usage.items())}


def listen_queue(port: int) -> int:
    """Connections waiting in the accept queue of every socket listening on `port`.

    `ss` asks the kernel for the listening sockets only (inet_diag filters there); reading /proc/net/tcp
    instead walks every socket, 400,000 of them with a 200,000-agent fleet on loopback, and that walk,
    five times a second, cost the bench process half a core of system time."""
    if shutil.which("ss"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=5, check=True
            ).stdout
            return sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("LISTEN"))
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    total += int(parts[4].split(":")[1], 16)  # rx_queue: the accept queue's length
    return total


KERNEL_COUNTERS = (  # /proc/net/netstat TcpExt: where the kernel turned connections away or held them
    "ListenOverflows",  # a handshake's last ACK (or a SYN) dropped: the accept queue was full
    "ListenDrops",
    "TCPReqQFullDoCookies",  # SYN queue full: SYN cookies sent
    "TCPDeferAcceptDrop",  # a bare ACK ignored while the connection waits for its first bytes
)


def kernel_counters() -> dict[str, int]:
    """The TcpExt counters of KERNEL_COUNTERS (the whole host's: only the bench runs here)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, numbers in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                values = dict(zip(names.split()[1:], map(int, numbers.split()[1:]), strict=False))
    return {name: values.get(name, 0) for name in KERNEL_COUNTERS}


def refusals_by_reason(metrics_port: int) -> dict[str, int]:
    """`agentpulse_refusals_total` summed over the workers, by reason (the manager's /metrics)."""
    totals: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            if line.startswith("agentpulse_refusals_total{"):
                labels, value = line.rsplit(" ", 1)
                reason = labels.split('reason="', 1)[1].split('"', 1)[0]
                totals[reason] = totals.get(reason, 0) + int(float(value))
    return totals


class QueueWatch:
    """The largest accept queue seen on the port, sampled in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> QueueWatch:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, listen_queue(self.port))


def launch_simulator(command: list[str], nice: int, **popen: Any) -> subprocess.Popen[bytes]:
    """Start the simulator in a session of its own and give that session's scheduling group the niceness.

    With the kernel's autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`, on by default)
    CPU time is shared between sessions first, and a process's niceness only weighs within its session:
    the manager runs in its own session, so a simulator at `nice -n 5` beside it still took half of the
    two cores (measured 2026-12-03: ~100 % of a core in a 200,000-agent storm while the workers' loops
    were 1-90 s behind). The group's own niceness (`/proc/<pid>/autogroup`) is what weighs between them."""
    process = subprocess.Popen(command, start_new_session=True, **popen)
    if nice:
        autogroup = Path(f"/proc/{process.pid}/autogroup")
        try:
            autogroup.write_text(str(nice))
        except OSError as error:  # no autogroup (or not allowed): plain niceness is all there is
            print(f"bench: the simulator's session keeps nice 0 ({autogroup}: {error})", file=sys.stderr)
    return process


def active_count(home: Path) -> int:
    path = home / "queue" / "db" / "global.db"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        row = db.execute(
            "SELECT COUNT(*) FROM agent WHERE id != 0 AND connection_status = 'active'"
        ).fetchone()
        return int(row[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def wait_active(
    home: Path, count: int, timeout: float, what: str, curve: dict[str, int] | None = None
) -> float:
    """Seconds until `count` agents are active; StepFailed after `timeout`. `curve`, when given, gets the
    count every CURVE_EVERY seconds (where a recovery slows down is what says why)."""
    started = time.monotonic()
    seen = 0
    next_mark = CURVE_EVERY
    while time.monotonic() - started < timeout:
        seen = active_count(home)
        elapsed = time.monotonic() - started
        if curve is not None and elapsed >= next_mark:
            curve[f"{next_mark:.0f}"] = seen
            next_mark += CURVE_EVERY
        if seen >= count:
            return elapsed
        time.sleep(POLL)
    raise StepFailed(f"{what}: {seen} of {count} agents active after {timeout:.0f} s")


def restart_storm(
    args: Any,
    *,
    write_home: Callable[..., object],
    start_manager: Callable[[Path, int], subprocess.Popen[bytes]],
    simulator_command: Callable[[int, Path, Path, float], list[str]],
    process_tree: Callable[[int], list[int]],
    out: Path,
    free_port: Callable[[], int],
) -> dict[str, object]:
    """Connect N agents, restart the manager under them, measure until all are active again."""
    home = out / "storm-home"
    port, metrics_port = free_port(), free_port()
    agents = args.agents
    write_home(
        home,
        port,
        args.workers,
        args.nats,
        args.interval,
        agents,
        args.worker_nice,
        metrics_port=metrics_port,
    )
    result: dict[str, object] = {"agents": agents, "workers": args.workers}
    summary_path = home / "simulate.json"
    manager: subprocess.Popen[bytes] | None = None
    simulator: subprocess.Popen[bytes] | None = None
    step = "first start"
    try:
        manager = start_manager(home, port)
        step = "initial connect"
        duration = args.ramp + 900  # ended by SIGTERM once the storm is over
        simulator = launch_simulator(
            simulator_command(port, home / "etc" / "client.keys", summary_path, duration),
            args.sim_nice,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result["initial_active_s"] = round(wait_active(home, agents, args.ramp + 300, step), 1)
        time.sleep(5)
        step = "stop (SIGTERM)"
        stopping = time.monotonic()
        manager.send_signal(signal.SIGTERM)
        try:
            result["stop_exit_code"] = manager.wait(timeout=150)
        except subprocess.TimeoutExpired:
            raise StepFailed("stop (SIGTERM): the manager did not exit within 150 s") from None
        result["stop_s"] = round(time.monotonic() - stopping, 1)
        step = "second start"
        with contextlib.suppress(FileNotFoundError):  # the first run's, naming the same port
            (home / "var" / "run" / "agentpulse-remoted.state").unlink()
        manager = start_manager(home, port)
        result["start_s"] = round(time.monotonic() - stopping - float(result["stop_s"]), 1)  # type: ignore[arg-type]
        step = "recovery"
        cpu = ProcessCpu(lambda: process_tree(manager.pid) + process_tree(simulator.pid))  # type: ignore[union-attr]
        cpu.begin()
        kernel_before = kernel_counters()
        with QueueWatch(port) as queue:
            try:
                curve: dict[str, int] = {}
                result["active_after_start_s"] = curve
                recovered = wait_active(home, agents, 600, "recovery after the restart", curve)
            finally:  # a failed recovery is where these figures matter most
                result["cpu_percent_per_process_during_recovery"] = cpu.end()
                result["accept_queue_peak"] = queue.peak
                after = kernel_counters()
                result["kernel_during_recovery"] = {k: after[k] - kernel_before[k] for k in KERNEL_COUNTERS}
                result["refused_by_the_manager_since_the_start"] = refusals_by_reason(metrics_port)
        result["active_again_after_sigterm_s"] = round(time.monotonic() - stopping, 1)
        result["active_again_after_start_s"] = round(recovered, 1)
    except StepFailed as failure:
        result["failed_step"] = str(failure)
    except (OSError, RuntimeError, TimeoutError) as error:
        result["failed_step"] = f"{step}: {error!r}"
    finally:
        if simulator is not None:
            with contextlib.suppress(ProcessLookupError):
                simulator.send_signal(signal.SIGTERM)
            try:
                simulator.wait(timeout=60)
            except subprocess.TimeoutExpired:
                simulator.kill()
                simulator.wait()
        if manager is not None and manager.poll() is None:
            manager.send_signal(signal.SIGTERM)
            try:
                manager.wait(timeout=150)
            except subprocess.TimeoutExpired:
                manager.kill()
                manager.wait()
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads(summary_path.read_text())
        retries = summary.get("retry_kinds", {})
        result["simulator_retries"] = retries
        # "refused": closed by the manager without an ack; "connect_refused": the port was closed (the
        # manager was down): every agent meets that once in a restart, and waits its retry_interval.
        result["refused"] = retries.get("refused", 0)
        result["connect_refused_while_down"] = retries.get("connect_refused", 0)
        result["timed_out"] = sum(v for k, v in retries.items() if "timeout" in k or k == "time_reconnect")
        result["simulator_errors"] = summary.get("error_kinds")
        result["startup_latency_ms"] = summary.get("startup_latency_ms")
        # The generator's own lateness (a real agent writes its startup as soon as it is connected).
        result["simulator_connected_to_startup_ms"] = summary.get("connected_to_startup_ms")
        result["simulator_tick_ms"] = summary.get("tick_ms")
    log = home / "logs" / "ossec.log"
    if log.exists():
        text = log.read_text(errors="replace")
        result["tracebacks_in_log"] = text.count("Traceback")
        result["workers_killed_at_stop"] = text.count("did not stop in time")
        result["stop_forced"] = "Stop forced" in text
    return result


def print_storm(result: dict[str, object]) -> None:
    print(json.dumps(result, indent=2))
    print(
        f"\nrestart storm: {result.get('agents')} agents, {result.get('workers')} workers: stop "
        f"{result.get('stop_s', '-')} s, all active again {result.get('active_again_after_sigterm_s', '-')} s "
        f"after the SIGTERM ({result.get('active_again_after_start_s', '-')} s after the start); refused by "
        f"the manager {result.get('refused', '-')}, connects refused while it was down "
        f"{result.get('connect_refused_while_down', '-')}, timed out {result.get('timed_out', '-')}"
        + (f"; FAILED at {result['failed_step']}" if "failed_step" in result else ""),
        file=sys.stdout,
    )
