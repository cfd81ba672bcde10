"""`HoldersFeed` on a real PostgreSQL: it reads the agents other nodes hold, then only what changed, and
misses no change whatever order the writing transactions commit in (a transaction that began before a
read and commits after a later one's commit is still read)."""

from __future__ import annotations

import asyncio

import psycopg

from agentpulse.cluster.holders import Followed, HoldersFeed
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.postgresql import schema

BIND = (
    "INSERT INTO agent_runtime (agent_id, node_name, node_epoch, changed) "
    "VALUES (%s, %s, 1, pg_current_xact_id()) ON CONFLICT (agent_id) DO UPDATE SET "
    "node_name = excluded.node_name, changed = excluded.changed"
)


def prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.migrate(conn, "manager", 0)
        for agent_id in (1, 2, 3):
            conn.execute(
                "INSERT INTO agent (id, name, date_add, connection_status) VALUES (%s, %s, 0, 'active')",
                (agent_id, f"agent-{agent_id}"),
            )
        conn.execute(BIND, (1, "node-b"))
        conn.execute(BIND, (2, "node-a"))  # this node's own: never read


def test_the_feed_reads_every_change_once_committed_whatever_the_commit_order(dsn: str) -> None:
    prepare(dsn)

    async def scenario() -> list[list[tuple[int, str, ConnectionStatus, StatusCode]]]:
        reads: list[list[tuple[int, str, ConnectionStatus, StatusCode]]] = []

        def on_rows(read: Followed) -> None:
            reads.append([(row.agent_id, row.node, row.status, row.code) for row in read.rows])

        feed = HoldersFeed(dsn, "node-a", on_rows, lambda: 0)
        try:
            assert await feed.once() == 1  # the first read: every agent another node holds
            assert await feed.once() == 0  # nothing changed since
            slow = psycopg.connect(dsn)  # a transaction that began first and commits last
            slow.execute(BIND, (3, "node-c"))
            with psycopg.connect(dsn, autocommit=True) as fast:
                fast.execute(
                    "UPDATE agent SET connection_status = 'disconnected', status_code = 3 WHERE id = 1"
                )
                fast.execute(BIND, (1, "node-b"))
            assert await feed.once() == 1  # node-b's change; node-c's is not committed yet
            slow.commit()
            slow.close()
            assert await feed.once() >= 1  # read although its id is older than what was read already
            assert await feed.once() == 0
        finally:
            await feed.stop()
        return reads

    reads = asyncio.run(scenario())
    assert reads[0] == [(1, "node-b", ConnectionStatus.ACTIVE, StatusCode.NONE)]
    assert reads[1] == [(1, "node-b", ConnectionStatus.DISCONNECTED, StatusCode.SHUTDOWN_RECEIVED)]
    assert (3, "node-c", ConnectionStatus.ACTIVE, StatusCode.NONE) in reads[2]
