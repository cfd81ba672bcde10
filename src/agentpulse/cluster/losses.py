"""`LossGate`: a node's "connection lost" (the end of an agent's `connection_grace`) decided against the other
nodes' bindings before this node's view, its alerts or the database say disconnected.

Why a gate: the agent may have reconnected to another node inside the grace, and that node's binding is
written with its next flush, so it may not be committed yet when the grace ends here (the late-grace race).
Each node's writer commits a flush mark (`node_flush.flushed`, the database's clock at the end of its
previous flush; an idle node too): everything that node accepted before the mark is committed. A loss is
stamped with the database's clock once it is here, and decided when every other live node's mark has
passed that stamp: then any binding made inside the grace is visible. The agent is then

- held by another node: this node's view adopts the database's status (no row, no event, no alert, not
  counted disconnected, not swept);
- disconnected in the database already (a survivor's take-over closed it): adopted the same way;
- bound again here meanwhile: nothing;
- otherwise: the loss goes to the store (code 6), and the writer re-checks the binding under the row lock.

The danger is waiting for ever on a node that no longer flushes (a stuck database connection with its
lease still renewed): a loss waits at most `max_wait`, then goes to the store as on one node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psycopg

from agentpulse.cluster.lease import Connection, Ticker, close_quietly, connect
from agentpulse.records import StatusUpdate
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.view import Adopted

log = logging.getLogger(__name__)

GATE_INTERVAL: Final = 0.1  # seconds between two rounds while losses wait
MAX_WAIT: Final = 6.0  # a loss waits at most this long for the other nodes' marks (two lease ttls)

# The database's clock now; of the other live nodes, the oldest flush mark of their current epoch, how
# many have no such mark yet (they may hold anything), and how many there are.
BARRIER: Final = """
SELECT clock_timestamp(), MIN(f.flushed), COUNT(*) FILTER (WHERE f.flushed IS NULL), COUNT(*)
FROM cluster_node n LEFT JOIN node_flush f ON f.node_name = n.name AND f.epoch = n.epoch
WHERE n.name <> %(node)s AND n.expires > clock_timestamp() AND n.claimed_epoch < n.epoch
"""
HOLDERS: Final = """
SELECT COALESCE(json_agg(json_build_array(r.agent_id, r.node_name, a.connection_status, a.status_code,
    r.status_seq)), '[]'::json)
FROM agent_runtime r JOIN agent a ON a.id = r.agent_id WHERE r.agent_id = ANY(%s)
"""


@dataclass(slots=True)
class _Waiting:
    update: StatusUpdate
    stamp: datetime  # the database's clock once the loss was here
    since: float  # monotonic, for MAX_WAIT


class LossGate:
    def __init__(
        self,
        dsn: str,
        node: str,
        *,
        submit: Callable[[StatusUpdate], object],
        adopt: Callable[[list[Adopted]], object],
        still_lost: Callable[[int], bool],
        tick: Callable[[], object] | None = None,
        interval: float = GATE_INTERVAL,
        max_wait: float = MAX_WAIT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.submit = submit  # the loss into the store (its view, alerts, the batch)
        self.adopt = adopt  # the database's status into the view, without a transition
        self.still_lost = still_lost  # not bound again here since (the grace tracker)
        self.tick = tick  # each round: the writer's own findings into the view (`Store.apply_adopted`)
        self.interval = interval
        self.max_wait = max_wait
        self.monotonic = monotonic
        self.adopted = 0  # losses not written: another node held the agent, or it was closed already
        self.submitted = 0
        self.late = 0  # submitted after max_wait without the other nodes' marks
        self._new: dict[int, StatusUpdate] = {}
        self._waiting: dict[int, _Waiting] = {}
        self._first_new: float | None = None
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticker = Ticker()

    def __len__(self) -> int:
        return len(self._new) + len(self._waiting)

    def add(self, update: StatusUpdate) -> None:
        """A grace ran out here: decide it (the first loss of an agent waiting wins)."""
        if update.agent_id not in self._waiting:
            self._new.setdefault(update.agent_id, update)
            if self._first_new is None:
                self._first_new = self.monotonic()

    def cancel(self, agent_id: int) -> None:
        """Another node said it holds the agent (or it came back here): no loss to decide."""
        self._new.pop(agent_id, None)
        self._waiting.pop(agent_id, None)

    async def start(self) -> None:
        self._ticker.reset()
        self._task = asyncio.create_task(self._run(), name=f"losses-{self.node}")

    async def stop(self) -> None:
        """Stop deciding; what still waits goes to the store as on one node (the writer re-checks)."""
        task, self._task = self._task, None
        await self._ticker.end(task)
        for waiting in [*self._new.values(), *(w.update for w in self._waiting.values())]:
            if self.still_lost(waiting.agent_id):
                self.submit(waiting)
        self._new.clear()
        self._waiting.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)

    async def _run(self) -> None:
        failing = False
        while not await self._ticker.sleep(self.interval):
            if self.tick is not None:
                self.tick()
            if not self:
                continue
            try:
                await self.once()
            except (psycopg.Error, OSError, TimeoutError) as error:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await close_quietly(conn)
                if not failing:
                    log.warning(
                        "Node %s cannot read the other nodes' bindings: %s; retrying", self.node, error
                    )
                failing = True
                self._give_up_late()
                continue
            failing = False

    async def once(self) -> None:
        """One round: stamp the new losses, decide those every other live node's mark has passed."""
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn, f"agentpulse:{self.node}:losses")
        fresh, self._new, self._first_new = self._new, {}, None  # here before the query is sent
        cursor = await self._conn.execute(BARRIER, {"node": self.node})
        row = await cursor.fetchone()
        assert row is not None
        now, barrier, unmarked, others = row[0], row[1], int(row[2]), int(row[3])
        since = self.monotonic()
        due = [
            agent_id
            for agent_id, waiting in self._waiting.items()
            if not others or (not unmarked and barrier is not None and barrier >= waiting.stamp)
        ]
        for agent_id, update in fresh.items():
            self._waiting[agent_id] = _Waiting(update, now, since)
            if not others:
                due.append(agent_id)  # no other live node: nobody else can hold it
        late = [
            agent_id
            for agent_id, waiting in self._waiting.items()
            if agent_id not in due and since - waiting.since > self.max_wait
        ]
        if late:
            self.late += len(late)
            log.warning(
                "Node %s: %d connection losses waited %.0f s for the other nodes' flushes; decided now",
                self.node,
                len(late),
                self.max_wait,
            )
        decided = [*due, *late]
        if decided:
            await self._decide(decided)

    async def _decide(self, agent_ids: list[int]) -> None:
        assert self._conn is not None
        cursor = await self._conn.execute(HOLDERS, (agent_ids,))
        row = await cursor.fetchone()
        rows = row[0] if row is not None else []
        if isinstance(rows, str):
            rows = json.loads(rows)
        found = {int(agent_id): (holder, status, code, seq) for agent_id, holder, status, code, seq in rows}
        adopted: list[Adopted] = []
        for agent_id in agent_ids:
            waiting = self._waiting.pop(agent_id)
            if not self.still_lost(agent_id):
                continue
            holder, status, code, seq = found.get(agent_id, (None, None, 0, 0))
            elsewhere = holder is not None and holder != self.node
            if status is not None and (elsewhere or status == ConnectionStatus.DISCONNECTED.value):
                adopted.append(
                    Adopted(
                        agent_id,
                        holder if elsewhere else None,
                        ConnectionStatus(status),
                        StatusCode(code or 0),
                        int(seq or 0),
                    )
                )
                continue
            self.submitted += 1
            self.submit(waiting.update)
        if adopted:
            self.adopted += len(adopted)
            self.adopt(adopted)
            moved = sum(1 for item in adopted if item.holder is not None)
            log.info(
                "Node %s: %d agents whose connection was lost here are held by other nodes, %d were "
                "disconnected already: not disconnected again",
                self.node,
                moved,
                len(adopted) - moved,
            )

    def _give_up_late(self) -> None:
        """The database cannot be read: losses past max_wait go to the store (its writer holds them)."""
        now = self.monotonic()
        late = [w.update for a, w in list(self._waiting.items()) if now - w.since > self.max_wait]
        for update in late:
            del self._waiting[update.agent_id]
        if self._first_new is not None and now - self._first_new > self.max_wait:
            late.extend(self._new.values())
            self._new, self._first_new = {}, None
        for update in late:
            if self.still_lost(update.agent_id):
                self.late += 1
                self.submit(update)

    def pending(self) -> Iterable[int]:
        """The agents whose loss waits (for tests and metrics)."""
        return [*self._new, *self._waiting]
