"""Rollout of a group change: how long until every agent has it, and what it costs the manager.

A real manager (own home under bench/out/shared/, pushes on) and `agentpulse simulate` with N agents that
start with the default group's merged.mg. Once all are synced it measures, in one run: the manager's CPU
(every process: the manager and its workers, from /proc) over a quiet window (the baseline), then a file of
--size bytes added to the default group, `remoted shared-reload`, and the time until every agent reports
the new md5 (global.db `synced`), with the manager's CPU over that window. The simulator's steady ack
latency covers both windows.

    .venv/bin/python bench/shared_rollout.py --agents 20000 --size 1048576 --workers 2   # the issue's case
    .venv/bin/python bench/shared_rollout.py --agents 500 --size 1048576                 # a shared machine
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, agentpulse_bin  # noqa: E402
from tests.e2e.wdb_tools import ask  # noqa: E402

from agentpulse.shared.merge import md5_hex  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "shared"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root_pid: int) -> float:
    """utime + stime of a process and its children (the workers), from /proc."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == root_pid or ppid == root_pid:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def synced(manager: ManagerProcess, md5: str) -> int:
    rows = manager.query(
        "SELECT COUNT(*) FROM agent WHERE id > 0 AND merged_sum = ? AND group_config_status = 'synced'", md5
    )
    return int(rows[0][0])


def wait_synced(manager: ManagerProcess, md5: str, count: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if synced(manager, md5) >= count:
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit(f"only {synced(manager, md5)} of {count} agents synced to {md5} after {timeout:g} s")


def text_file(size: int) -> bytes:
    rng = random.Random(14)
    line = "".join(rng.choice(string.ascii_letters) for _ in range(79)) + "\n"
    return (line * (size // len(line) + 1)).encode()[:size]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024 * 1024, help="bytes added to the group")
    parser.add_argument("--interval", type=float, default=20.0, help="the agents' notify_time")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-pushes", type=int, default=64)
    parser.add_argument("--sim-processes", type=int, default=0, help="simulator processes (0: its default)")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of the quiet window")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()

    shutil.rmtree(OUT, ignore_errors=True)
    remote = (
        f"<shared_reload>3600</shared_reload><max_concurrent_pushes>{args.max_pushes}</max_concurrent_pushes>"
    )
    settings = ManagerSettings(
        connection_grace=120, workers=args.workers, shared_push=True, flush_interval=1.0, extra_remote=remote
    )
    manager = ManagerProcess(OUT / "ossec", settings)
    manager.add_agents(args.agents)
    manager.start(timeout=60)
    assert manager.process is not None
    group = manager.root / "etc/shared/default"
    start_md5 = md5_hex((group / "merged.mg").read_bytes())
    command = [agentpulse_bin("agentpulse"), "simulate", "--manager", f"{LOOPBACK}:{manager.port}"]
    command += ["--agents", str(args.agents), "--keys", str(manager.home.client_keys)]
    command += ["--interval", str(args.interval), "--ramp", str(min(60.0, args.agents / 500)), "--duration"]
    command += [str(args.timeout * 3), "--progress", "never", "--merged-sum", start_md5]
    if args.sim_processes:
        command += ["--processes", str(args.sim_processes)]
    simulator = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        up = wait_synced(manager, start_md5, args.agents, args.timeout)
        time.sleep(2 * args.interval)  # past the ramp's turbulence
        cpu0, t0 = cpu_seconds(manager.process.pid), time.monotonic()
        time.sleep(args.baseline)
        baseline_cpu = cpu_seconds(manager.process.pid) - cpu0
        baseline_s = time.monotonic() - t0
        (group / "big.txt").write_bytes(text_file(args.size))
        cpu1, t1 = cpu_seconds(manager.process.pid), time.monotonic()
        reply = ask(manager, b"remoted shared-reload")
        assert reply is not None and reply.startswith(b"ok "), reply
        merged = (group / "merged.mg").read_bytes()
        wait_synced(manager, md5_hex(merged), args.agents, args.timeout)
        rollout = time.monotonic() - t1
        rollout_cpu = cpu_seconds(manager.process.pid) - cpu1
        simulator.send_signal(signal.SIGINT)
        stdout, _ = simulator.communicate(timeout=120)
    finally:
        if simulator.poll() is None:
            simulator.kill()
            simulator.communicate()
        manager.stop()
    summary = json.loads(stdout) if stdout.strip() else {}
    result = {
        "agents": args.agents,
        "workers": args.workers,
        "max_concurrent_pushes": args.max_pushes,
        "merged_mg_bytes": len(merged),
        "messages_per_push": 2 + -(-len(merged) // 900),
        "fleet_up_s": round(up, 1),
        "rollout_s": round(rollout, 2),
        "rollout_agents_per_s": round(args.agents / rollout, 1),
        "rollout_manager_cpu_s": round(rollout_cpu, 2),
        "rollout_manager_cpu_share": round(rollout_cpu / rollout, 2),
        "baseline_manager_cpu_share": round(baseline_cpu / baseline_s, 2),
        "manager_cpu_ms_per_push": round(
            1000 * (rollout_cpu - baseline_cpu / baseline_s * rollout) / args.agents, 2
        ),
        "pushed_bytes_per_s": round(args.agents * len(merged) / rollout),
        "steady_ack_latency_ms": summary.get("steady_ack_latency_ms"),
        "shared_received": summary.get("shared_received"),
        "shared_failed": summary.get("shared_failed"),
        "errors": summary.get("errors"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
