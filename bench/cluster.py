"""Several real nodes on one PostgreSQL against one node on SQLite, in the same run (issue 16's benchmark).

Each configuration starts real manager processes (`agentpulse start`, own homes under bench/out/cluster/,
free loopback ports, the same client.keys, Prometheus metrics on), and drives them with `agentpulse
simulate --spread` (agent i starts at node i mod n, as behind a balancer):

1. keep-alives: the fleet connects, then a steady window; keep-alives/s through the nodes (their
   `agentpulse_keepalives_total`), CPU of the node processes (and of the PostgreSQL server) per keep-alive,
   the commit latency per flush and rows per second (`agentpulse_store_flush_seconds`/`_batch_size`);
2. status changes: every agent shuts down at once; the seconds until all N changes are committed;
3. the restart storm: a fresh fleet connects, every node is stopped (SIGTERM) and started again at once;
   the seconds until all N agents are active again.

Configurations: 1 node on SQLite (the baseline), then 1, 2 and 3 nodes on a throwaway PostgreSQL
(tests/pgserver.py, fsync off). NATS is off in all of them (no outbox rows on either backend). Small by
default (the machine is shared); the issue's storm figure is `--agents 50000`:

    .venv/bin/python bench/cluster.py --agents 2000 --interval 5 --steady 20
    .venv/bin/python bench/cluster.py --agents 50000 --interval 20 --steady 60 --ramp 150
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.pgserver import PostgresServer  # noqa: E402

import storm  # noqa: E402
from agentpulse.wire.keys import KeysFile  # noqa: E402
from fleet import LOOPBACK, free_port, process_tree  # noqa: E402

OUT = ROOT / "bench" / "out" / "cluster"
GRACE = 1.0  # <connection_grace>: the status phase waits it out once
POLL = 0.25


@dataclass
class Node:
    name: str
    home: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def write(self, database: str, interval: float, keys: str, workers: int = 1) -> None:
        (self.home / "etc").mkdir(parents=True, exist_ok=True)
        (self.home / "etc" / "client.keys").write_text(keys)
        (self.home / "etc" / "ossec.conf").write_text(
            f"""<ossec_config>
  <remote>
    <connection>secure</connection><port>{self.port}</port><protocol>tcp</protocol>
    <local_ip>{LOOPBACK}</local_ip><workers>{workers}</workers><connection_grace>{GRACE}</connection_grace>
    <manager_keepalive><enabled>yes</enabled><interval>{max(60, interval * 3)}</interval>
      <timeout>{max(180, interval * 9)}</timeout></manager_keepalive>
  </remote>
  <global><agents_disconnection_time>900</agents_disconnection_time><node_name>{self.name}</node_name></global>
  <nats><enabled>no</enabled></nats>
  <database>{database}</database>
  <metrics><enabled>yes</enabled><host>{LOOPBACK}</host><port>{self.metrics_port}</port></metrics>
</ossec_config>
"""
        )

    def launch(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # the last run's, naming the same port
            (self.home / "var" / "run" / "agentpulse-remoted.state").unlink()
        log = open(self.home / "manager.out", "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentpulse",
                "start",
                "--home",
                str(self.home),
                "--log-level",
                os.environ.get("BENCH_LOG_LEVEL", "warning"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            text = (self.home / "manager.out").read_text(errors="replace")[-2000:]
            raise storm.StepFailed(f"{self.name} exited with {self.process.returncode}: {text}")
        state = self.home / "var" / "run" / "agentpulse-remoted.state"
        return state.exists() and f":{self.port}/" in state.read_text()

    def stop(self, timeout: float = 150) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def scrape(self) -> dict[str, float]:
        """Each metric summed over its labels."""
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        totals: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                name = name.split("{", 1)[0]
                with contextlib.suppress(ValueError):
                    totals[name] = totals.get(name, 0.0) + float(value)
        return totals


def start_all(nodes: list[Node], timeout: float = 120) -> float:
    """Start every node at once; seconds until all listen."""
    started = time.monotonic()
    for node in nodes:
        node.launch()
    while not all(node.listening() for node in nodes):
        if time.monotonic() - started > timeout:
            raise storm.StepFailed(f"the nodes did not all listen within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def stop_all(nodes: list[Node]) -> float:
    started = time.monotonic()
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        node.stop()
    return time.monotonic() - started


class Counts:
    """Agents per status, read the way an operator's tool reads the database."""

    def __init__(self, dsn: str | None, home: Path) -> None:
        self.dsn = dsn
        self.home = home

    def count(self, status: str) -> int:
        query = "SELECT COUNT(*) FROM agent WHERE id != 0 AND connection_status = %s"
        with contextlib.suppress(Exception):
            if self.dsn is not None:
                import psycopg

                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    row = conn.execute(query, (status,)).fetchone()
            else:
                import sqlite3

                db = sqlite3.connect(f"file:{self.home / 'queue/db/global.db'}?mode=ro", uri=True, timeout=5)
                try:
                    row = db.execute(query.replace("%s", "?"), (status,)).fetchone()
                finally:
                    db.close()
            return int(row[0]) if row else 0
        return 0

    def wait(self, status: str, count: int, timeout: float, what: str) -> float:
        started = time.monotonic()
        seen = 0
        while time.monotonic() - started < timeout:
            seen = self.count(status)
            if seen >= count:
                return time.monotonic() - started
            time.sleep(POLL)
        raise storm.StepFailed(f"{what}: {seen} of {count} agents {status} after {timeout:.0f} s")


def simulate(nodes: list[Node], args: argparse.Namespace, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "agentpulse",
        "simulate",
        "--manager",
        ",".join(f"{LOOPBACK}:{node.port}" for node in nodes),
        "--spread",
        "--agents",
        str(args.agents),
        "--keys",
        str(nodes[0].home / "etc" / "client.keys"),
        "--interval",
        str(args.interval),
        "--ramp",
        str(args.ramp),
        "--json-out",
        str(out),
        "--progress",
        "never",
        "--precompute",
        "--sources",
        str(max(1, args.agents // 50)),  # many addresses, as a real fleet (see bench/fleet.py's storm)
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_of(pids: list[int]) -> float:
    return sum(storm.cpu_seconds(pid) for pid in pids)


def node_pids(nodes: list[Node]) -> list[int]:
    return [pid for node in nodes if node.process is not None for pid in process_tree(node.process.pid)]


def totals(nodes: list[Node]) -> dict[str, float]:
    summed: dict[str, float] = {}
    for node in nodes:
        for name, value in node.scrape().items():
            summed[name] = summed.get(name, 0.0) + value
    return summed


def keepalive_phase(
    nodes: list[Node],
    counts: Counts,
    server_pids: Callable[[], list[int]],
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    """Connect, a steady window of keep-alives; then the simulator ends, every connection closes at once,
    and each agent's grace ends together: N status changes (code 6) through the nodes."""
    result: dict[str, Any] = {}
    idle_start, idle_cpu = time.monotonic(), cpu_of(node_pids(nodes))
    time.sleep(3)
    idle = (cpu_of(node_pids(nodes)) - idle_cpu) / (time.monotonic() - idle_start)
    result["idle_cpu_percent"] = round(idle * 100, 1)
    sim = simulate(nodes, args, out, "--duration", "3600")
    try:
        connect_for = args.ramp + 300
        result["connected_s"] = round(counts.wait("active", args.agents, connect_for, "initial connect"), 1)
        time.sleep(2)
        before, cpu, db_cpu, at = (
            totals(nodes),
            cpu_of(node_pids(nodes)),
            cpu_of(server_pids()),
            time.monotonic(),
        )
        time.sleep(args.steady)
        after, cpu2, db_cpu2 = totals(nodes), cpu_of(node_pids(nodes)), cpu_of(server_pids())
        window = time.monotonic() - at

        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        keepalives = max(1.0, delta("agentpulse_keepalives_total"))
        flushes = max(1.0, delta("agentpulse_store_flush_seconds_count"))
        busy = max(0.0, (cpu2 - cpu) - idle * window)
        result |= {
            "keepalives_per_s": round(keepalives / window, 1),
            "node_cpu_percent": round((cpu2 - cpu) / window * 100, 1),
            "node_cpu_us_per_keepalive": round((cpu2 - cpu) / keepalives * 1e6, 1),
            "node_cpu_us_per_keepalive_less_idle": round(busy / keepalives * 1e6, 1),
            "db_server_cpu_us_per_keepalive": round((db_cpu2 - db_cpu) / keepalives * 1e6, 1),
            "flush_ms_mean": round(delta("agentpulse_store_flush_seconds_sum") / flushes * 1000, 1),
            "flushes_per_s": round(flushes / window, 2),
            "rows_per_s": round(delta("agentpulse_store_flush_batch_size_sum") / window, 1),
        }
        result |= status_phase(nodes, counts, sim, args)
    finally:
        end(sim)
    return result


def status_phase(
    nodes: list[Node], counts: Counts, sim: subprocess.Popen[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """The simulator stops: every connection closes at once, every agent's grace ends together, and N
    status changes (code 6) go through the nodes."""
    before = totals(nodes)
    sim.send_signal(signal.SIGTERM)
    closed = time.monotonic()
    took = counts.wait("disconnected", args.agents, 120, "status changes after the fleet closed")
    after = totals(nodes)
    flushes = max(
        1.0, after["agentpulse_store_flush_seconds_count"] - before["agentpulse_store_flush_seconds_count"]
    )
    flush_s = after["agentpulse_store_flush_seconds_sum"] - before["agentpulse_store_flush_seconds_sum"]
    return {
        "status_changes": args.agents,
        "status_changes_committed_s": round(took, 2),  # from the fleet's close: grace + processing + commit
        "status_changes_per_s_after_grace": round(args.agents / max(POLL, took - GRACE), 1),
        "status_flush_ms_mean": round(flush_s / flushes * 1000, 1),
        "status_phase_s": round(time.monotonic() - closed, 1),
    }


def storm_phase(nodes: list[Node], counts: Counts, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """A fleet connects; every node is stopped and started again at once; until all N are active again."""
    result: dict[str, Any] = {}
    sim = simulate(nodes, args, out, "--duration", "3600")
    try:
        counts.wait("active", args.agents, args.ramp + 300, "storm: initial connect")
        time.sleep(3)
        stopping = time.monotonic()
        result["stop_s"] = round(stop_all(nodes), 1)
        result["start_s"] = round(start_all(nodes), 1)
        cpu = storm.ProcessCpu(lambda: node_pids(nodes) + process_tree(sim.pid))
        cpu.begin()
        per_node = [storm.ProcessCpu(lambda node=node: node_pids([node])) for node in nodes]  # type: ignore[misc]
        for meter in per_node:
            meter.begin()
        before = [labelled(node) for node in nodes]
        recovered, milestones = recovery(counts, args.agents)
        result["cpu_percent_during_recovery"] = cpu.end()
        result["node_cpu_percent_during_recovery"] = [sum(meter.end().values()) for meter in per_node]
        result["active_milestones_s"] = milestones
        result["nodes_during_recovery"] = [
            recovery_figures(old, labelled(node)) for old, node in zip(before, nodes, strict=True)
        ]
        result["active_again_after_sigterm_s"] = round(time.monotonic() - stopping, 1)
        result["active_again_after_start_s"] = round(recovered, 1)
    finally:
        end(sim)
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads(out.read_text())
        result["simulator_retries"] = summary.get("retry_kinds")
    return result


def labelled(node: Node) -> dict[str, float]:
    """Every sample of the node's metrics, by its full name with labels."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{node.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
    return samples


def recovery_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What one node did during the recovery: refusals by reason, flushes and their mean commit time."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    refusals: dict[str, int] = {}  # by reason, summed over the node's remoted processes
    for name in after:
        if name.startswith("agentpulse_refusals_total{") and 'reason="' in name and delta(name):
            reason = name.split('reason="', 1)[1].split('"', 1)[0]
            refusals[reason] = refusals.get(reason, 0) + int(delta(name))
    flushes = max(1.0, delta("agentpulse_store_flush_seconds_count"))
    return {
        "refusals": refusals,
        "flushes": int(flushes),
        "flush_ms_mean": round(delta("agentpulse_store_flush_seconds_sum") / flushes * 1000, 1),
        "rows": int(delta("agentpulse_store_flush_batch_size_sum")),
    }


def recovery(counts: Counts, agents: int, timeout: float = 600) -> tuple[float, dict[str, float]]:
    """Seconds until every agent is active again, and when 50/90/99 % were."""
    started = time.monotonic()
    milestones: dict[str, float] = {}
    while time.monotonic() - started < timeout:
        seen = counts.count("active")
        for share in (50, 90, 99):
            if seen * 100 >= share * agents and f"{share}%" not in milestones:
                milestones[f"{share}%"] = round(time.monotonic() - started, 1)
        if seen >= agents:
            return time.monotonic() - started, milestones
        time.sleep(POLL)
    raise storm.StepFailed(
        f"storm: recovery after the restart: not all {agents} active after {timeout:.0f} s"
    )


def run_config(
    label: str, count: int, dsn: str | None, server_pids: Callable[[], list[int]], args: argparse.Namespace
) -> dict[str, Any]:
    folder = OUT / label.replace(" ", "-").replace(",", "")
    shutil.rmtree(folder, ignore_errors=True)
    keys = KeysFile([])
    keys.add_many(f"bench-{n:06d}" for n in range(1, args.agents + 1))
    text = keys.render()
    backend = f"<backend>postgresql</backend><dsn>{dsn}</dsn>" if dsn else ""
    nodes = [Node(f"node-{i + 1}", folder / f"node-{i + 1}") for i in range(count)]
    for node in nodes:
        node.write(backend, args.interval, text, args.node_workers)
    counts = Counts(dsn, nodes[0].home)
    result: dict[str, Any] = {"config": label, "nodes": count, "agents": args.agents}
    try:
        result["first_start_s"] = round(start_all(nodes), 1)
        if not args.storm_only:
            result |= keepalive_phase(nodes, counts, server_pids, args, folder / "keepalives.json")
        result |= storm_phase(nodes, counts, args, folder / "storm.json")
    except storm.StepFailed as failure:
        result["failed_step"] = str(failure)
    finally:
        stop_all(nodes)
    tracebacks = sum(
        (node.home / "manager.out").read_text(errors="replace").count("Traceback") for node in nodes
    )
    result["tracebacks_in_logs"] = tracebacks
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5.0, help="the fleet's keep-alive interval (s)")
    parser.add_argument("--steady", type=float, default=20.0, help="the measured window of keep-alives (s)")
    parser.add_argument("--ramp", type=float, default=10.0, help="the simulator's connection ramp (s)")
    parser.add_argument("--nodes", default="1,2,3", help="node counts to run on PostgreSQL")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--node-workers",
        type=int,
        default=1,
        help="remoted processes per node (1: in the node's own process, capped near 18,000 connections by "
        "this machine's 20,000 open files per process)",
    )
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--storm-only", action="store_true", help="only the restart storm (no keep-alive phase)"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    if not args.skip_sqlite:
        results.append(run_config("1 node, SQLite", 1, None, list, args))
        print(json.dumps(results[-1]), flush=True)
    server = PostgresServer()
    server.start()
    try:
        postmaster = server.postmaster
        for count in (int(part) for part in args.nodes.split(",")):
            dsn = server.create_database(f"bench_cluster_{count}")
            results.append(
                run_config(f"{count} node(s), PostgreSQL", count, dsn, lambda: process_tree(postmaster), args)
            )
            print(json.dumps(results[-1]), flush=True)
    finally:
        server.stop()
    print_table(results)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("failed_step" in result for result in results) else 0


def print_table(results: list[dict[str, Any]]) -> None:
    columns = [
        ("config", "config"),
        ("keepalives_per_s", "ka/s"),
        ("node_cpu_us_per_keepalive", "node us/ka"),
        ("node_cpu_us_per_keepalive_less_idle", "less idle"),
        ("db_server_cpu_us_per_keepalive", "db us/ka"),
        ("flush_ms_mean", "flush ms"),
        ("rows_per_s", "rows/s"),
        ("status_changes_committed_s", "N changes s"),
        ("status_flush_ms_mean", "status flush ms"),
        ("active_again_after_sigterm_s", "storm s (SIGTERM)"),
        ("active_again_after_start_s", "storm s (start)"),
    ]
    print("| " + " | ".join(title for _, title in columns) + " |")
    print("|" + " --- |" * len(columns))
    for result in results:
        cells = [
            str(result.get(key, result.get("failed_step", "-") if key == "config" else "-"))
            for key, _ in columns
        ]
        cells[0] = result["config"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
