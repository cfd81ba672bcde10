"""`LossGate` against a real PostgreSQL (the store's schema, real `cluster_node` leases): a loss waits until
every other live node's flush mark has passed it, then is adopted (another node holds the agent, or the
database has it disconnected already) or goes to the store; with no other live node it is decided at once,
and one that waits past `max_wait` goes to the store."""

from __future__ import annotations

import asyncio

import psycopg

from agentpulse.cluster import sql
from agentpulse.cluster.lease import connect, ensure_schema
from agentpulse.cluster.losses import LossGate
from agentpulse.records import StatusUpdate
from agentpulse.status import ConnectionStatus, StatusCode, Trigger
from agentpulse.store.postgresql import schema
from agentpulse.store.view import Adopted


def prepare(dsn: str, agents: dict[int, tuple[str, str]]) -> None:
    """The store's tables, and each agent's status and holder: {id: (status, node)}."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.migrate(conn, "manager", 0)
        for agent_id, (status, node) in agents.items():
            conn.execute(
                "INSERT INTO agent (id, name, date_add, connection_status) VALUES (%s, %s, 0, %s)",
                (agent_id, f"agent-{agent_id}", status),
            )
            conn.execute(
                "INSERT INTO agent_runtime (agent_id, node_name, node_epoch, status_seq) VALUES (%s, %s, 1, 3)",
                (agent_id, node),
            )


async def register(dsn: str, node: str) -> int:
    conn = await connect(dsn, "test")
    try:
        await ensure_schema(conn)
        cursor = await conn.execute(sql.REGISTER_NODE, (node, "host", 30.0))
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])
    finally:
        await conn.close()


def mark(dsn: str, node: str, epoch: int) -> None:
    """`node`'s writer committed a flush mark now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO node_flush (node_name, epoch, flushed) VALUES (%s, %s, clock_timestamp()) "
            "ON CONFLICT (node_name) DO UPDATE SET epoch = excluded.epoch, flushed = excluded.flushed",
            (node, epoch),
        )


class Outcome:
    def __init__(self) -> None:
        self.submitted: list[int] = []
        self.adopted: list[Adopted] = []

    def gate(self, dsn: str, *, max_wait: float = 30.0) -> LossGate:
        return LossGate(
            dsn,
            "node-a",
            submit=lambda update: self.submitted.append(update.agent_id),
            adopt=self.adopted.extend,
            still_lost=lambda agent_id: True,
            max_wait=max_wait,
        )


def lost(agent_id: int) -> StatusUpdate:
    return StatusUpdate(agent_id, Trigger.CONNECTION_LOST, 0.0)


def test_a_loss_waits_for_the_other_nodes_mark_then_is_adopted_or_submitted(dsn: str) -> None:
    prepare(dsn, {1: ("active", "node-b"), 2: ("active", "node-a"), 3: ("disconnected", "node-a")})
    outcome = Outcome()

    async def scenario() -> None:
        await register(dsn, "node-a")
        b_epoch = await register(dsn, "node-b")
        mark(dsn, "node-b", b_epoch)  # before the losses: it says nothing of them
        gate = outcome.gate(dsn)
        for agent_id in (1, 2, 3):
            gate.add(lost(agent_id))
        await gate.once()  # stamped
        await gate.once()
        assert outcome.submitted == [] and outcome.adopted == []
        assert sorted(gate.pending()) == [1, 2, 3]
        mark(dsn, "node-b", b_epoch)  # node-b flushed after the losses were stamped
        await gate.once()
        await gate.stop()

    asyncio.run(scenario())
    assert outcome.submitted == [2]
    assert outcome.adopted == [
        Adopted(1, "node-b", ConnectionStatus.ACTIVE, StatusCode.NONE, 3),
        Adopted(3, None, ConnectionStatus.DISCONNECTED, StatusCode.NONE, 3),
    ]


def test_without_another_live_node_a_loss_is_decided_at_once(dsn: str) -> None:
    prepare(dsn, {1: ("active", "node-a")})
    outcome = Outcome()

    async def scenario() -> None:
        await register(dsn, "node-a")
        gate = outcome.gate(dsn)
        gate.add(lost(1))
        await gate.once()
        await gate.stop()

    asyncio.run(scenario())
    assert outcome.submitted == [1]


def test_a_live_node_without_a_mark_holds_a_loss_until_max_wait(dsn: str) -> None:
    prepare(dsn, {1: ("active", "node-a")})
    outcome = Outcome()

    async def scenario() -> None:
        await register(dsn, "node-a")
        await register(dsn, "node-b")  # live, never flushed: it may hold anything
        gate = outcome.gate(dsn, max_wait=0.3)
        gate.add(lost(1))
        await gate.once()
        await gate.once()
        assert outcome.submitted == []
        await asyncio.sleep(0.4)
        await gate.once()
        assert gate.late == 1
        await gate.stop()

    asyncio.run(scenario())
    assert outcome.submitted == [1]
