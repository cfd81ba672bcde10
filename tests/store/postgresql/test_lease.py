"""The node lease and the holder columns on PostgreSQL: the database decides each node's epoch, the lease is
renewed every second on its own thread, it expires once the node stops, a second process with the same
name takes it over (and the first one says so), and each agent a node holds carries that node and epoch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg
import pytest

from agentpulse.records import StatusUpdate
from agentpulse.status import Trigger
from agentpulse.store.facade import Store
from agentpulse.store.postgresql import lease
from agentpulse.store.postgresql.backend import PostgresBackend
from agentpulse.store.postgresql.lease import NodeLease
from agentpulse.wire.keys import KeysFile
from tests.pgserver import PostgresServer
from tests.store.databases import read
from tests.store.test_facade import KEEPALIVE


def test_each_start_is_a_new_epoch_renewed_every_second_until_the_node_stops(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.create_database("lease_epochs")
    first = PostgresBackend(dsn, manager_host="host-a", node_name="node-a")
    first.open(0)
    first.close()
    backend = PostgresBackend(dsn, manager_host="host-a", node_name="node-a")
    backend.open(0)
    try:
        with psycopg.connect(dsn) as db:
            (row,) = lease.nodes(db)
            assert (row.name, row.epoch, row.host, row.expired) == ("node-a", 2, "host-a", False)
            time.sleep(2.5)
            (later,) = lease.nodes(db)
        assert later.renewed_at > row.renewed_at + 1 and later.expires_at == pytest.approx(
            later.renewed_at + 3, abs=0.5
        )
        assert backend.lease is not None and backend.lease.renewals >= 2
    finally:
        backend.close()
    time.sleep(lease.LEASE_TIME + 0.5)
    with psycopg.connect(dsn) as db:
        (stopped,) = lease.nodes(db)
    assert stopped.expired and stopped.epoch == 2


def test_a_second_process_with_the_same_name_takes_the_lease_and_the_first_says_so(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = postgres.create_database("lease_twins")
    schema_maker = PostgresBackend(dsn, manager_host="h", node_name="x")
    schema_maker.open(0)
    schema_maker.close()
    with psycopg.connect(dsn) as db:
        first = NodeLease(dsn, "twin", lease.acquire(db, "twin", "h1"), interval=0.1)
        first.start()
        second_epoch = lease.acquire(db, "twin", "h2")
        deadline = time.monotonic() + 5
        while not first.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        first.stop()
        assert first.lost and second_epoch == first.epoch + 1
        assert {row.name: (row.epoch, row.host) for row in lease.nodes(db)}["twin"] == (second_epoch, "h2")
    assert (
        sum(
            "two nodes must not share a name" in r.getMessage()
            for r in caplog.records
            if r.levelno == logging.ERROR
        )
        == 1
    )


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
    assert [tuple(row) for row in rows] == [(1, "node-b", 1, 2)]  # agent 2 never connected: no holder
