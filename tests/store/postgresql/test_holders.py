"""The holder columns on PostgreSQL: each agent a node holds carries that node and the lease epoch the node
was given (the leases themselves are agentpulse.cluster's, tested in tests/cluster), and the database
counts each agent's connections."""

from __future__ import annotations

from pathlib import Path

from agentpulse.records import StatusUpdate
from agentpulse.status import Trigger
from agentpulse.store.facade import Store
from agentpulse.store.postgresql.backend import PostgresBackend
from agentpulse.wire.keys import KeysFile
from tests.pgserver import PostgresServer
from tests.store.databases import read
from tests.store.test_facade import KEEPALIVE


def test_each_agent_records_the_node_and_epoch_holding_it_and_counts_its_connections(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres.create_database("lease_holders")
    keys = KeysFile.parse("001 a any k1\n002 b any k2\n")
    store = Store(
        tmp_path,
        manager_host="h",
        node_name="node-b",
        flush_interval=0.05,
        backend=PostgresBackend(dsn, manager_host="h", node_name="node-b"),
    )
    store.open(list(keys.active()))
    store.set_node_epoch(7)
    try:
        store.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
        store.submit(StatusUpdate(1, Trigger.ALIVE, 2.0, keepalive=KEEPALIVE))
        assert store.flush_wait()
        store.submit(StatusUpdate(1, Trigger.STARTUP, 3.0))  # a reconnection: a new connection epoch
        assert store.flush_wait()
        rows = read(
            store,
            "SELECT agent_id, node_name, node_epoch, connection_epoch FROM agent_runtime ORDER BY agent_id",
        )
    finally:
        store.close()
    assert [tuple(row) for row in rows] == [(1, "node-b", 7, 2)]  # agent 2 never connected: no holder
