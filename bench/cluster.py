"""Several nodes on one PostgreSQL against one node on SQLite, in the same run: keep-alives/s through 1, 2
and 3 nodes (each node a `Store` with its own writer thread and connection, holding its share of the
agents), and the restart storm: every agent's startup and first keep-alive (status, history with the
database-decided sequence, outbox) committed after a restart, on one node and spread over the nodes.

The nodes share this process (and its GIL): a lower bound for nodes on their own machines. Short by
default (the machine is shared):

    .venv/bin/python bench/cluster.py --agents 3000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.pg_store import KEEPALIVE, encode  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

from agentpulse.records import StatusUpdate  # noqa: E402
from agentpulse.status import Trigger  # noqa: E402
from agentpulse.store.backend import Backend  # noqa: E402
from agentpulse.store.facade import Store  # noqa: E402
from agentpulse.store.postgresql.backend import PostgresBackend  # noqa: E402
from agentpulse.store.sqlite.backend import SqliteBackend  # noqa: E402
from agentpulse.store.subscriber import Subscriber  # noqa: E402
from agentpulse.wire.keys import KeysFile  # noqa: E402


def open_nodes(backends: list[Backend], agents: int) -> list[Store]:
    keys = KeysFile.parse("".join(f"{n:03d} a{n} any k{n}\n" for n in range(1, agents + 1)))
    stores = []
    for index, backend in enumerate(backends):
        store = Store(
            Path(tempfile.mkdtemp()),
            manager_host=f"m{index}",
            node_name=f"node-{index}",
            flush_interval=60,
            backend=backend,
        )
        store.subscribe(Subscriber(outbox_encoder=encode))
        store.open(list(keys.active()))
        store.set_node_epoch(1)
        stores.append(store)
    return stores


def shares(agents: int, nodes: int) -> list[list[int]]:
    return [list(range(1 + i, agents + 1, nodes)) for i in range(nodes)]


def storm(stores: list[Store], parts: list[list[int]], now: float) -> float:
    """Every agent's startup and first keep-alive, each node its share, until all are committed."""
    start = time.perf_counter()
    for store, ids in zip(stores, parts, strict=True):
        for agent_id in ids:
            store.submit(StatusUpdate(agent_id, Trigger.STARTUP, now))
            store.submit(StatusUpdate(agent_id, Trigger.ALIVE, now, keepalive=KEEPALIVE))
    with ThreadPoolExecutor(len(stores)) as pool:
        assert all(pool.map(lambda store: store.flush_wait(300), stores))
    return time.perf_counter() - start


def keepalives(stores: list[Store], parts: list[list[int]], rounds: int, now: float) -> float:
    """Median keep-alives/s over `rounds` rounds of one keep-alive per agent, each node one flush."""
    rates = []
    with ThreadPoolExecutor(len(stores)) as pool:
        for _ in range(rounds):
            now += 1
            start = time.perf_counter()
            for store, ids in zip(stores, parts, strict=True):
                store.submit_repeats(ids, [now] * len(ids), dict.fromkeys(ids, KEEPALIVE))
            assert all(pool.map(lambda store: store.flush_wait(300), stores))
            rates.append(sum(map(len, parts)) / (time.perf_counter() - start))
    return statistics.median(rates)


def run(name: str, backends: list[Backend], agents: int, rounds: int) -> None:
    stores = open_nodes(backends, agents)
    try:
        parts = shares(agents, len(stores))
        took = storm(stores, parts, 1_700_000_000.0)
        rate = keepalives(stores, parts, rounds, 1_700_000_100.0)
        print(
            f"{name:22s} keep-alives {rate:10,.0f}/s   restart storm of {agents} agents "
            f"committed in {took:6.2f} s ({agents / took:8,.0f} agents/s)"
        )
    finally:
        for store in stores:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.agents} agents, {args.rounds} keep-alive rounds, one flush per node per round")
    run(
        "1 node, SQLite",
        [SqliteBackend(Path(tempfile.mkdtemp()), manager_host="m", node_name="n")],
        args.agents,
        args.rounds,
    )
    server = PostgresServer()
    server.start()
    try:
        for nodes in (1, 2, 3):
            dsn = server.create_database(f"bench_{nodes}")
            backends: list[Backend] = [
                PostgresBackend(dsn, manager_host=f"m{i}", node_name=f"node-{i}") for i in range(nodes)
            ]
            run(f"{nodes} node(s), PostgreSQL", backends, args.agents, args.rounds)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
