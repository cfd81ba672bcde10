"""The several-nodes side of a PostgreSQL write: which agents a flush binds, which of its losses another
node's binding supersedes, the notifications to the node an agent moved from, and the ordered insert of
status events into the shared outbox. Pure functions of the batch and what `writes._sequence` read under
the agents' row locks; run on the writer thread, in the flush's transaction.

The danger is order across nodes: the outbox's ids must commit in the order they are given (the relay
reads past the last id it published), so every writer takes one lock before inserting events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.batch import Batch, OutboxRow
from agentpulse.store.postgresql.schema import OUTBOX_LOCK

# A node's "connection lost" and "silent" for an agent another node holds by then: not written (it moved).
SUPERSEDED_CODES = (StatusCode.CONNECTION_LOST, StatusCode.NO_KEEPALIVE)
# Bindings taken from another node are told to it on this channel (JSON, at most 8000 bytes a payload).
BINDINGS_CHANNEL = "agentpulse_bindings"
NOTIFY_CHUNK = 300  # agents per payload: [id, "pending"] is at most 22 bytes


@dataclass(frozen=True, slots=True)
class Held:
    """What `_sequence` decided under the agents' row locks, for the rest of the write."""

    history: list[TransitionRow]
    outbox: list[OutboxRow]
    superseded: set[int]  # agents whose loss is not written (another node holds them, or closed already)
    holders: dict[int, str | None]  # the node each locked agent was bound to before this write
    bound: dict[int, bool]  # agents this write binds to this node (True: kept against a newer connection)


def bound_agents(batch: Batch) -> dict[int, bool]:
    """The agents this flush binds to this node (a live status, or a claim), True for those it keeps
    against a newer connection on another node."""
    bound = {
        agent_id: False
        for agent_id, (status, *_) in batch.statuses.items()
        if status in (ConnectionStatus.PENDING, ConnectionStatus.ACTIVE)
    }
    for agent_id, kept in batch.claims.items():
        final = batch.statuses.get(agent_id)
        if final is None or final[0] in (ConnectionStatus.PENDING, ConnectionStatus.ACTIVE):
            bound[agent_id] = kept or bound.get(agent_id, False)
    return bound


def superseded_losses(
    batch: Batch,
    holders: dict[int, str | None],
    committed: dict[int, tuple[ConnectionStatus, StatusCode]],
    node_name: str,
) -> set[int]:
    """Agents whose loss this batch must not write: another node holds them now and this batch does not
    take them back (no live status for them), or the database has them disconnected already and this
    batch has nothing else for them (its loss would be a second one)."""
    only_losses: dict[int, bool] = {}
    for row in batch.history:
        loss = row.to_status is ConnectionStatus.DISCONNECTED and row.code in SUPERSEDED_CODES
        only_losses[row.agent_id] = only_losses.get(row.agent_id, True) and loss
    superseded = set()
    for agent_id, holder in holders.items():
        final = batch.statuses.get(agent_id, (ConnectionStatus.DISCONNECTED,))[0]
        if final is not ConnectionStatus.DISCONNECTED:
            continue
        if (holder is not None and holder != node_name) or (
            only_losses.get(agent_id, False)
            and committed.get(agent_id, (None,))[0] is ConnectionStatus.DISCONNECTED
        ):
            superseded.add(agent_id)
    return superseded


def notify_moved(cur: psycopg.Cursor[Any], batch: Batch, held: Held, node_name: str, node_epoch: int) -> None:
    """Tell each node that held an agent this write binds here (NOTIFY, delivered at the commit): it lets
    its own session go, or keeps it by the overtake rule (`cluster/bindings.py`)."""
    moved: dict[tuple[str, bool], list[list[object]]] = {}
    for agent_id, kept in held.bound.items():
        before = held.holders.get(agent_id)
        if before is None or before == node_name:
            continue
        final = batch.statuses.get(agent_id)
        status = final[0].value if final is not None else ConnectionStatus.ACTIVE.value
        moved.setdefault((before, kept), []).append([agent_id, status])
    for (before, kept), agents in moved.items():
        for start in range(0, len(agents), NOTIFY_CHUNK):
            payload = json.dumps(
                {
                    "kind": "kept" if kept else "moved",
                    "from": before,
                    "to": node_name,
                    "epoch": node_epoch,
                    "agents": agents[start : start + NOTIFY_CHUNK],
                }
            )
            cur.execute("SELECT pg_notify(%s, %s)", (BINDINGS_CHANNEL, payload))


def insert_outbox(cur: psycopg.Cursor[Any], outbox: list[OutboxRow], now: float) -> None:
    """The status events, as the last statements of the transaction, under a transaction-scoped lock that
    every writer of the shared outbox takes (each node's writer, a survivor's take-over). The relay reads
    the outbox by id and moves past what it published (`id > last`): with two nodes' transactions
    inserting at once, a row given a lower id could commit after a higher one was published and be passed
    over. Under the lock, ids are given and committed in the same order."""
    if not outbox:
        return
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK,))
    with cur.copy("COPY event_outbox (subject, msg_id, payload, created) FROM STDIN") as copy:
        for subject, msg_id, payload in outbox:
            copy.write_row((subject, msg_id, payload, now))
