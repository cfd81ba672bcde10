"""The per-agent status sequence on PostgreSQL is the database's: two nodes writing one agent's history (it
moved from one to the other, each node's view numbering from what it knew) never clash on the history key,
and each outbox row's `<id>:<seq>` and payload follow the committed numbers, one ordered history per agent
whichever node wrote it. A node's late "connection lost" for an agent another node holds by then is not
written at all."""

from __future__ import annotations

import json
from pathlib import Path

from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import Trigger
from agentpulse.store.facade import Store
from agentpulse.store.postgresql.backend import PostgresBackend
from agentpulse.store.subscriber import Subscriber
from agentpulse.wire.keys import KeysFile
from tests.pgserver import PostgresServer
from tests.store.databases import read
from tests.store.test_facade import KEEPALIVE

KEYS = KeysFile.parse("001 a any k1\n002 b any k2\n")


def encode(row: TransitionRow) -> tuple[str, str, bytes]:
    body = {"seq": row.seq, "from": row.from_status.value, "to": row.to_status.value}
    return (f"status.{row.agent_id}", f"{row.agent_id}:{row.seq}", json.dumps(body).encode())


def node(dsn: str, name: str, folder: Path) -> Store:
    store = Store(
        folder,
        manager_host=name,
        node_name=name,
        flush_interval=0.05,
        backend=PostgresBackend(dsn, manager_host=name, node_name=name),
    )
    store.subscribe(Subscriber(outbox_encoder=encode))
    store.open(list(KEYS.active()))
    return store


def test_two_nodes_writing_one_agent_get_one_ordered_history_and_one_event_per_row(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres.create_database("sequence_two_nodes")
    a = node(dsn, "node-a", tmp_path / "a")
    b = node(dsn, "node-b", tmp_path / "b")  # loaded before a wrote anything: its view numbers from 0
    try:
        a.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
        a.submit(StatusUpdate(1, Trigger.ALIVE, 2.0, keepalive=KEEPALIVE))
        a.submit(StatusUpdate(2, Trigger.STARTUP, 2.0))
        assert a.flush_wait(10)
        b.submit(StatusUpdate(1, Trigger.STARTUP, 3.0))  # the agent moved to node-b: b's view says seq 1
        b.submit(StatusUpdate(1, Trigger.ALIVE, 4.0, keepalive=KEEPALIVE))
        assert b.flush_wait(10)
        a.submit(StatusUpdate(1, Trigger.CONNECTION_LOST, 5.0))  # a's grace ended: b holds it, not written
        assert a.flush_wait(10)
        b.submit(StatusUpdate(1, Trigger.SHUTDOWN, 6.0))  # b's view says seq 3
        assert b.flush_wait(10)
        history = read(a, "SELECT agent_id, seq, to_status FROM agent_status_history ORDER BY agent_id, seq")
        outbox = read(a, "SELECT msg_id, payload FROM event_outbox ORDER BY id")
        seqs = read(a, "SELECT agent_id, status_seq FROM agent_runtime ORDER BY agent_id")
    finally:
        a.close()
        b.close()
    assert [tuple(row) for row in history] == [
        (1, 1, "pending"),
        (1, 2, "active"),
        (1, 3, "pending"),
        (1, 4, "active"),
        (1, 5, "disconnected"),
        (2, 1, "pending"),
    ]
    agent_1 = [(row[0], json.loads(bytes(row[1]))["seq"]) for row in outbox if row[0].startswith("1:")]
    assert agent_1 == [(f"1:{n}", n) for n in range(1, 6)]  # one event per row, in order, numbers agree
    assert [tuple(row) for row in seqs] == [(1, 5), (2, 1)]
    assert read_code(dsn) == 3  # node-b's shutdown, not node-a's code 6


def read_code(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status_code FROM agent WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0])
