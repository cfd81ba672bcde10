"""`BindingsWatch`: this node hears at once when another node takes one of its agents.

A node's writer, when it binds an agent another node held, notifies that node in the same transaction
(`pg_notify` on `agentpulse_bindings`, delivered at the commit; store/postgresql/writes.py). This node
then applies the cross-node `connection_overtake_time` rule (the manager's `_bound_elsewhere`): its
connection of the agent lost or quiet for longer than the overtake time goes, and its view follows the
other node's; a live one is kept and the other node's newer connection is refused (`kind` "kept").

The danger is a notification missed while this connection is down (NOTIFY is not queued for a listener
that is not connected): each time LISTEN is in place again (`on_listening`), the holders' feed
(`cluster/holders.py`) reads the database at once and finds the bindings made meanwhile; it reads every
half second anyway. The losses' gate (`cluster/losses.py`) and the writer's row-lock check keep the
database right in any case.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import psycopg

from agentpulse.cluster.lease import Connection, Ticker, close_quietly, connect
from agentpulse.status import ConnectionStatus

log = logging.getLogger(__name__)

CHANNEL: Final = "agentpulse_bindings"  # store/postgresql/writes.py BINDINGS_CHANNEL
RETRY: Final = 1.0
WAIT: Final = 0.5  # seconds one wait for notifications lasts, so a stop is noticed


@dataclass(frozen=True, slots=True)
class Taken:
    """Agents node `to` bound that this node held: `kept` when `to` keeps its older live connection
    against this node's newer one (this node must let its connection go)."""

    to: str
    epoch: int
    kept: bool
    agents: tuple[tuple[int, ConnectionStatus], ...]


def parse(payload: str, node: str) -> Taken | None:
    """One notification, or None when it is not about this node's agents (or is not ours at all)."""
    try:
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("from") != node:
            return None
        agents = tuple((int(agent), ConnectionStatus(status)) for agent, status in data["agents"])
        return Taken(str(data["to"]), int(data["epoch"]), data.get("kind") == "kept", agents)
    except (ValueError, KeyError, TypeError):
        log.warning("Node %s: a binding notification it cannot read was ignored", node)
        return None


class BindingsWatch:
    def __init__(
        self,
        dsn: str,
        node: str,
        on_taken: Callable[[Taken], None],
        on_listening: Callable[[], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.on_taken = on_taken
        self.on_listening = on_listening  # LISTEN is in place (again): catch up from the database
        self.listens = 0  # LISTENs in place, the first included
        self.heard = 0  # notifications about this node's agents
        self.listening = asyncio.Event()  # LISTEN is in place (tests wait for it)
        self._task: asyncio.Task[None] | None = None
        self._ticker = Ticker()

    async def start(self) -> None:
        self._ticker.reset()
        self._task = asyncio.create_task(self._run(), name=f"bindings-{self.node}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await self._ticker.end(task)

    async def _run(self) -> None:
        failing = False
        while not self._ticker.stopping:
            conn: Connection | None = None
            try:
                conn = await connect(self.dsn, f"agentpulse:{self.node}:bindings")
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                self.listens += 1
                if self.on_listening is not None:
                    self.on_listening()
                if failing:
                    log.info("Node %s hears other nodes' bindings again", self.node)
                failing = False
                while not self._ticker.stopping:
                    async for notify in conn.notifies(timeout=WAIT):
                        taken = parse(notify.payload, self.node)
                        if taken is None:
                            continue
                        self.heard += 1
                        try:
                            self.on_taken(taken)
                        except Exception:  # a bug there must not stop the node hearing the next ones
                            log.exception("Node %s: applying node %s's bindings failed", self.node, taken.to)
            except (psycopg.Error, OSError, TimeoutError) as error:
                self.listening.clear()
                if not failing:
                    log.warning("Node %s cannot hear other nodes' bindings: %s; retrying", self.node, error)
                failing = True
            finally:
                if conn is not None:
                    await close_quietly(conn)
            if await self._ticker.sleep(RETRY):
                return
