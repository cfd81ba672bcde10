"""Several nodes insert into one event_outbox; its ids are taken at insert and seen at commit. The relay
reads past the last id it published, so a row must never become visible after a higher id did: a
transaction that inserts outbox rows holds the outbox lock from its inserts to its commit, and a second
node's inserts wait for that commit (`writes.insert_outbox`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg

from agentpulse.store.postgresql.backend import PostgresBackend
from agentpulse.store.postgresql.writes import insert_outbox
from tests.pgserver import PostgresServer


def visible_ids(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [int(row[0]) for row in conn.execute("SELECT id FROM event_outbox ORDER BY id")]


def test_outbox_rows_of_two_nodes_become_visible_in_id_order(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = postgres.create_database("outbox_order")
    schema = PostgresBackend(dsn, manager_host="m", node_name="n")
    schema.open(0.0)
    schema.close()
    first: psycopg.Connection[Any] = psycopg.connect(dsn)
    second: psycopg.Connection[Any] = psycopg.connect(dsn)
    try:
        with first.cursor() as cur:  # node A's flush, not yet committed: it took id 1
            insert_outbox(cur, [("agent.status.001", "1:1", b"a")], 1.0)
        inserted = threading.Event()

        def node_b() -> None:
            with second.cursor() as cur:
                insert_outbox(cur, [("agent.status.002", "2:1", b"b")], 1.0)
            inserted.set()
            second.commit()

        thread = threading.Thread(target=node_b)
        thread.start()
        # Without the lock node B would take id 2 and commit now, and a relay reading now would see id 2
        # without id 1, publish it, and later read only past 2: node A's row would never be published.
        assert not inserted.wait(1.0), "node B inserted while node A's outbox rows were uncommitted"
        assert visible_ids(dsn) == []
        first.commit()
        thread.join(10)
        assert inserted.is_set()
        assert visible_ids(dsn) == [1, 2]
    finally:
        first.close()
        second.close()
