"""`disconnect_node`: the store's named operation for a dead node's agents. Every agent still bound to the
node's expired lease epoch (agent_runtime.node_name/node_epoch) and still pending or active becomes
disconnected with code 6 (connection lost), with its history row numbered by the database and its status
event in the outbox, all on the caller's connection and in the caller's transaction (the cluster's claim
of that lease), so the claim and these writes commit together: exactly once.

The danger is an agent that reconnected elsewhere meanwhile: the rows are locked (`FOR UPDATE`) and the
binding re-checked under the lock, so a node that committed the agent's new binding first keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.batch import OutboxRow
from agentpulse.store.postgresql.schema import OUTBOX_LOCK

Encoder = Callable[[TransitionRow], OutboxRow]

BOUND = (
    "SELECT a.id, a.connection_status, r.status_seq, a.last_keepalive FROM agent_runtime r "
    "JOIN agent a ON a.id = r.agent_id WHERE r.node_name = %s AND r.node_epoch = %s "
    "AND a.connection_status IN ('pending', 'active') ORDER BY a.id FOR UPDATE OF r, a"
)


async def disconnect_node(
    conn: psycopg.AsyncConnection[Any], node: str, epoch: int, now: float, encoder: Encoder | None
) -> list[TransitionRow]:
    """Code 6 for every agent `node` held in `epoch` and nobody took since; the rows written."""
    cursor = await conn.execute(BOUND, (node, epoch))
    rows = [
        TransitionRow(
            int(agent_id),
            int(seq) + 1,
            ConnectionStatus(status),
            ConnectionStatus.DISCONNECTED,
            StatusCode.CONNECTION_LOST,
            now,
            float(last_keepalive) if last_keepalive is not None else None,
        )
        for agent_id, status, seq, last_keepalive in await cursor.fetchall()
    ]
    if not rows:
        return rows
    ids = [row.agent_id for row in rows]
    await conn.execute(
        "UPDATE agent SET connection_status = 'disconnected', status_code = %s, disconnection_time = %s "
        "WHERE id = ANY(%s)",
        (int(StatusCode.CONNECTION_LOST), int(now), ids),
    )
    await conn.execute(
        "UPDATE agent_runtime AS r SET status_seq = u.s, changed = pg_current_xact_id() "
        "FROM unnest(%s::int[], %s::int[]) AS u(a, s) "
        "WHERE r.agent_id = u.a",
        (ids, [row.seq for row in rows]),
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [(r.agent_id, r.seq, r.from_status.value, r.to_status.value, int(r.code), r.at) for r in rows],
        )
        if encoder is not None:
            # The lock every writer of the shared outbox takes (binding.py `insert_outbox`), held to the
            # claim's commit: ids are given and committed in the same order.
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK,))
            await cur.executemany(
                "INSERT INTO event_outbox (subject, msg_id, payload, created) VALUES (%s, %s, %s, %s)",
                [(*encoder(row), now) for row in rows],
            )
    return rows
