"""Two nodes' writers inserting status events into the shared outbox at once commit them in id order: the
relay moves past what it published (`id > last`), so a row given a lower id that committed after a higher
one was published would be passed over. The second writer waits for the first's commit (the outbox lock),
so the first's row is visible before the second's exists."""

from __future__ import annotations

import threading

import psycopg

from agentpulse.store.postgresql import schema
from agentpulse.store.postgresql.binding import insert_outbox
from tests.pgserver import PostgresServer


def test_a_second_writer_of_the_outbox_waits_for_the_first_one_s_commit(postgres: PostgresServer) -> None:
    dsn = postgres.create_database("outbox_order")
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.migrate(conn, "manager", 0)
    first = psycopg.connect(dsn, autocommit=True)
    second = psycopg.connect(dsn, autocommit=True)
    done = threading.Event()

    def second_writer() -> None:
        with second.transaction(), second.cursor() as cur:
            insert_outbox(cur, [("agent.status.002", "2:1", b"{}")], 2.0)
        done.set()

    try:
        with first.transaction(), first.cursor() as cur:
            insert_outbox(cur, [("agent.status.001", "1:1", b"{}")], 1.0)
            thread = threading.Thread(target=second_writer)
            thread.start()
            assert not done.wait(1.0), "the second writer committed while the first one's row was not"
        thread.join(10)
        assert done.is_set()
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT msg_id FROM event_outbox ORDER BY id").fetchall()
    finally:
        first.close()
        second.close()
    assert [row[0] for row in rows] == ["1:1", "2:1"]
