"""The store on PostgreSQL against the store on SQLite, in the same run: keep-alives/s and status changes/s
through `Store` (submit on this thread, the writer thread commits), commit latency per flush and rows/s.

Each round submits one keep-alive (or one status change, with its history and outbox rows) for every agent,
then waits for the commit: one flush per round, so the round's time is the flush's latency. CPU is this
process's (the store and the driver); PostgreSQL's own CPU is in the server's processes, counted apart from
/proc when the server is ours.

    .venv/bin/python bench/pg_store.py --agents 10000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgserver import PostgresServer  # noqa: E402

from agentpulse.records import StatusUpdate, TransitionRow  # noqa: E402
from agentpulse.status import Trigger  # noqa: E402
from agentpulse.store.backend import Backend  # noqa: E402
from agentpulse.store.facade import Store  # noqa: E402
from agentpulse.store.postgresql.backend import PostgresBackend  # noqa: E402
from agentpulse.store.sqlite.backend import SqliteBackend  # noqa: E402
from agentpulse.store.subscriber import Subscriber  # noqa: E402
from agentpulse.wire import control  # noqa: E402
from agentpulse.wire.keys import KeysFile  # noqa: E402

KEEPALIVE = control.parse_keepalive(
    b"Linux |h |6.1 |#1 |x86_64 [Debian GNU/Linux|debian: 12] - Wazuh v4.14.7\nx merged.mg\n"
)
TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(server: PostgresServer | None) -> float:
    """CPU seconds of every process whose command line names the server's data folder (postmaster and
    backends); 0 for SQLite."""
    if server is None:
        return 0.0
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if pid == str(server.postmaster) or f"\nPPid:\t{server.postmaster}\n" in status:
            total += (int(stat[11]) + int(stat[12])) / TICKS
    return total


def encode(row: TransitionRow) -> tuple[str, str, bytes]:
    return (f"agent.status.{row.agent_id:03d}", f"{row.agent_id:03d}:{row.seq}", b'{"status":"x"}' * 8)


def run(name: str, backend: Backend, agents: int, rounds: int, server: PostgresServer | None) -> None:
    keys = KeysFile.parse("".join(f"{n:03d} a{n} any k{n}\n" for n in range(1, agents + 1)))
    store = Store(
        Path(tempfile.mkdtemp()), manager_host="m", node_name="n", flush_interval=60, backend=backend
    )
    store.subscribe(Subscriber(outbox_encoder=encode))
    store.open(list(keys.active()))
    ids = list(range(1, agents + 1))
    try:
        now = 1_700_000_000.0
        for agent_id in ids:
            store.submit(StatusUpdate(agent_id, Trigger.STARTUP, now))
            store.submit(StatusUpdate(agent_id, Trigger.ALIVE, now, keepalive=KEEPALIVE))
        assert store.flush_wait(120)
        for kind in ("keep-alives", "status changes"):
            latencies, cpu, db_cpu = [], 0.0, 0.0
            for round_ in range(rounds):
                now += 1
                cpu_before, db_before, start = time.process_time(), server_cpu(server), time.perf_counter()
                if kind == "keep-alives":
                    store.submit_repeats(ids, [now] * agents, dict.fromkeys(ids, KEEPALIVE))
                else:
                    trigger = Trigger.SHUTDOWN if round_ % 2 == 0 else Trigger.ALIVE
                    for agent_id in ids:
                        store.submit(StatusUpdate(agent_id, trigger, now, keepalive=KEEPALIVE))
                assert store.flush_wait(120)
                latencies.append(time.perf_counter() - start)
                cpu += time.process_time() - cpu_before
                db_cpu += server_cpu(server) - db_before
            median = statistics.median(latencies)
            rows = agents * (3 if kind == "status changes" else 1)  # status + history + outbox per change
            print(
                f"{name:10s} {kind:15s} {agents / median:10,.0f}/s  flush {median * 1000:7.1f} ms "
                f"(max {max(latencies) * 1000:7.1f})  {rows / median:10,.0f} rows/s  "
                f"CPU {cpu / (rounds * agents) * 1e6:6.1f} us here + {db_cpu / (rounds * agents) * 1e6:6.1f} us server"
                " per item"
            )
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--with-lease", action="store_true", help="also PostgreSQL as a node with a lease")
    parser.add_argument("--lease-first", action="store_true", help="with --with-lease: that run first")
    args = parser.parse_args()
    print(f"{args.agents} agents, {args.rounds} rounds of each, one flush per round")
    run(
        "sqlite",
        SqliteBackend(Path(tempfile.mkdtemp()), manager_host="m", node_name="n"),
        args.agents,
        args.rounds,
        None,
    )
    server = PostgresServer()
    server.start()
    try:
        order = ["postgresql", "pg+lease"] if args.with_lease else ["postgresql"]
        if args.lease_first:
            order.reverse()
        for name in order:
            backend = PostgresBackend(
                server.create_database(f"bench_{len(name)}"), manager_host="m", node_name="n"
            )
            if name == "pg+lease":
                # As a node of a cluster: its lease epoch beside each agent, its flush mark with each flush.
                backend.set_node_epoch(1)
            run(name, backend, args.agents, args.rounds, server)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
