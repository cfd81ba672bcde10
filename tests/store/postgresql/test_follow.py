"""Two stores on one PostgreSQL (two nodes' writers): what a node's writer tells and learns of the other.

- node-b binding an agent node-a held notifies node-a (`agentpulse_bindings`, at the commit);
- node-a's late loss for it is not written, and node-a's view adopts the database's status (no alert
  would be raised: the view is not disconnected);
- a claim binds an agent without a status change, and a node with a lease publishes its flush mark
  (`node_flush`), idle or not, one flush after reading it;
- an agent's first row on a node goes on from the committed status (not this node's stale view)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg

from agentpulse.records import StatusUpdate
from agentpulse.status import ConnectionStatus, Trigger
from agentpulse.store.facade import Store
from agentpulse.store.postgresql.backend import PostgresBackend
from agentpulse.wire.keys import KeysFile
from tests.pgserver import PostgresServer
from tests.store.databases import read
from tests.store.test_facade import KEEPALIVE

KEYS = KeysFile.parse("001 a any k1\n002 b any k2\n")


def node(dsn: str, name: str, folder: Path, epoch: int = 0) -> Store:
    store = Store(
        folder,
        manager_host=name,
        node_name=name,
        flush_interval=0.05,
        backend=PostgresBackend(dsn, manager_host=name, node_name=name),
    )
    store.open(list(KEYS.active()))
    if epoch:
        store.set_node_epoch(epoch)
    return store


def test_a_node_hears_the_other_take_its_agent_and_its_view_adopts_the_late_loss(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres.create_database("follow_two_nodes")
    a = node(dsn, "node-a", tmp_path / "a")
    b = node(dsn, "node-b", tmp_path / "b")
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN agentpulse_bindings")
    try:
        a.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
        a.submit(StatusUpdate(1, Trigger.ALIVE, 2.0, keepalive=KEEPALIVE))
        assert a.flush_wait(10)
        b.submit(StatusUpdate(1, Trigger.STARTUP, 3.0))  # moved to node-b
        assert b.flush_wait(10)
        told = [json.loads(n.payload) for n in listener.notifies(timeout=2.0, stop_after=1)]
        a.submit(StatusUpdate(1, Trigger.CONNECTION_LOST, 4.0))  # node-a's late loss
        assert a.status_of(1) is ConnectionStatus.DISCONNECTED
        assert a.flush_wait(10)
        assert a.apply_adopted() == [1]
        history = read(a, "SELECT seq, from_status, to_status FROM agent_status_history ORDER BY seq")
    finally:
        listener.close()
        a.close()
        b.close()
    assert told == [
        {"kind": "moved", "from": "node-a", "to": "node-b", "epoch": 0, "agents": [[1, "pending"]]}
    ]
    view = a.agents[1]
    assert (view.status, view.elsewhere, view.seq) == (ConnectionStatus.PENDING, True, 3)
    assert 1 not in a.view.heard  # not swept here
    # node-b's first row goes on from the committed status (active), not from its view (never connected)
    assert [tuple(row) for row in history] == [
        (1, "never_connected", "pending"),
        (2, "pending", "active"),
        (3, "active", "pending"),
    ]


def test_a_claim_binds_without_a_status_change_and_the_flush_mark_follows_an_idle_node(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres.create_database("follow_claims")
    b = node(dsn, "node-b", tmp_path / "b", epoch=4)
    try:
        b.submit(StatusUpdate(2, Trigger.STARTUP, 1.0))
        assert b.flush_wait(10)
        b.claim(2, kept=True)
        assert b.flush_wait(10)
        deadline = time.monotonic() + 5
        marks: list[object] = []
        while len(set(marks)) < 3:  # the mark moves on with idle flushes too
            assert time.monotonic() < deadline, marks
            rows = read(b, "SELECT epoch, flushed FROM node_flush WHERE node_name = 'node-b'")
            if rows:
                assert rows[0][0] == 4
                marks.append(rows[0][1])
            time.sleep(0.05)
        holders = read(b, "SELECT agent_id, node_name, node_epoch FROM agent_runtime WHERE agent_id = 2")
    finally:
        b.close()
    assert [tuple(row) for row in holders] == [(2, "node-b", 4)]
    assert marks == sorted(marks)
