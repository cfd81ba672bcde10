"""`NodeFollow`: what a node does when the other nodes' writes concern its agents (docs/cluster.md).

The manager composes it with its remoted (in-process, or the worker pool), grace tracker and store, and
hands it to the cluster's parts as callbacks:

- the losses' gate (`losses.py`) asks whether a loss still holds here (`still_lost`);
- another node bound one of this node's agents (`bindings.py`, `bound_elsewhere`): the cross-node
  `connection_overtake_time` rule, the same as remoted's within one node (`remoted/bindings.py`): the
  newer connection wins only once the old one has been quiet for longer than the overtake time;
  otherwise it is refused. Here the newer connection was already accepted by the other node (nodes learn
  of each other through the database), so "refused" means: this node keeps the agent (a "kept" binding),
  and the other node closes its newer connection when it hears it;
- what the database has of the agents the other nodes hold (`holders.py`, `followed`): the view takes
  their status as it changes there; and a binding of one of this node's agents whose notification was
  missed (the listening connection was down) is applied as if heard;
- the lease was lost (`lease_lost`): this node takes no agent connection and lets those it has go, as
  lost, so each agent's grace runs and the other nodes' bindings decide; `lease_regained` serves again.

The danger is a connection that looks live here only because this node's loop has not read its close
yet (the agent closed it, then connected to the other node): a live one is looked at again
`KEEP_RECHECK` later before it is kept.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from agentpulse.cluster.bindings import Taken
from agentpulse.cluster.holders import Followed
from agentpulse.cluster.losses import LossGate
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.status import LIVE, ConnectionStatus, StatusCode
from agentpulse.store.facade import Store
from agentpulse.store.view import Adopted

log = logging.getLogger(__name__)

KEEP_RECHECK: Final = 0.5  # seconds before a connection that looks live is kept against a newer one


class NodeFollow:
    def __init__(
        self,
        store: Store,
        grace: GraceTracker,
        remoted: Remoted | None,
        pool: WorkerPool | None,
        overtake_time: float,
    ) -> None:
        if (remoted is None) == (pool is None):
            raise ValueError("remoted runs here or in workers: exactly one of remoted and pool")
        self.store = store
        self.grace = grace
        self.remoted = remoted
        self.pool = pool
        self.overtake_time = overtake_time
        self.losses: LossGate | None = None  # set once made (it calls `still_lost`)
        self.overtaken = 0  # connections here quiet for over the overtake time, closed for another node's
        self.refused = 0  # newer connections here closed because another node kept its older live one
        self.kept = 0  # live connections here kept against a newer one on another node
        self.followed_changes = 0  # agents held elsewhere whose status the view took from the database
        self.caught_up = 0  # bindings of agents held here found in the database, not heard
        self._rechecking: set[int] = set()  # live connections here looked at again soon (`keep_or_let_go`)

    def still_lost(self, agent_id: int) -> bool:
        """No connection of the agent here since its grace ran out, and the view still has it live."""
        return not self.grace.holders(agent_id) and self.store.status_of(agent_id) in LIVE

    def silent_for(self, agent_id: int) -> float | None:
        """Seconds this node's connection of the agent has been quiet; None when it has none."""
        if self.remoted is not None:
            session = self.remoted.bindings.session_of(agent_id)
            if session is None or session.closed:
                return None
            return self.remoted.monotonic() - session.last_received
        if not self.grace.holders(agent_id):
            return None
        assert self.pool is not None
        return self.pool.book.silent_for(agent_id)

    def let_go(self, agent_id: int) -> None:
        """Close this node's connection of the agent without a loss (an overtake: no grace, no code 6)."""
        if self.remoted is not None:
            self.remoted.overtaken(agent_id)
        else:
            assert self.pool is not None
            self.pool.drop(agent_id, self.grace.holders(agent_id))

    def bound_elsewhere(self, taken: Taken) -> None:
        """Another node bound agents this node held. A connection here lost, or quiet for longer than
        the overtake time, goes (no code 6: the other node holds the agent) and the view follows the
        other node; a live one is looked at again shortly (`keep_or_let_go`). When the other node kept
        its older connection against this node's newer one ("kept"), this one goes."""
        adopted: list[Adopted] = []
        overtaken = refused = 0
        live: list[tuple[int, ConnectionStatus]] = []
        for agent_id, status in taken.agents:
            if agent_id not in self.store.agents:
                continue
            silent = self.silent_for(agent_id)
            if not taken.kept and silent is not None and silent <= self.overtake_time:
                live.append((agent_id, status))
                continue
            if silent is not None:
                self.let_go(agent_id)
                if taken.kept:
                    refused += 1
                else:
                    overtaken += 1
            adopted.append(self._given_up(agent_id, taken.to, status))
        self.store.adopt(adopted)
        self.overtaken += overtaken
        self.refused += refused
        if live:
            self._rechecking.update(agent_id for agent_id, _ in live)
            asyncio.get_running_loop().call_later(KEEP_RECHECK, self.keep_or_let_go, taken.to, live)
        if overtaken or refused:
            log.info(
                "Node %s bound %d agents held here: %d connections here quiet for over %.0f s overtaken, "
                "%d newer connections here refused (the older one there is live)",
                taken.to,
                len(taken.agents),
                overtaken,
                self.overtake_time,
                refused,
            )
        elif adopted:
            log.info("Node %s holds %d agents that were held here: no loss here", taken.to, len(adopted))

    def followed(self, read: Followed) -> None:
        """What the database has of agents other nodes hold (`HoldersFeed`). An agent this node's view has
        as its own (live, not another node's) that the database has another node holding: that node took
        it after this node's binding, and its notification was missed; applied as `bound_elsewhere` would
        (the overtake rule, `kept` as that node wrote it). Unless this node's own binding of it is not
        committed yet, or was not when the read began: then the read says nothing of what came after it
        (this node's commit tells the other node, which decides). Any other agent: the view takes the
        database's status, code and holder (no row, no event, no alert: the holder wrote those)."""
        adopted: list[Adopted] = []
        taken: dict[tuple[str, int, bool], list[tuple[int, ConnectionStatus]]] = {}
        agents = self.store.agents
        for row in read.rows:
            view = agents.get(row.agent_id)
            if view is None or row.agent_id in self._rechecking:
                continue
            if self.store.binding_unsettled(row.agent_id, read.settled):
                continue
            if view.status in LIVE and not view.elsewhere:
                taken.setdefault((row.node, row.epoch, row.kept), []).append((row.agent_id, row.status))
            elif (view.status, view.code) != (row.status, row.code) or view.elsewhere != (row.status in LIVE):
                adopted.append(Adopted(row.agent_id, row.node, row.status, row.code, row.seq))
        self.followed_changes += len(self.store.adopt(adopted))
        for (to, epoch, kept), moved in taken.items():
            self.caught_up += len(moved)
            log.info(
                "Node %s took %d agents held here (%s): found in the database, the notification was missed",
                to,
                len(moved),
                "kept its older connection" if kept else "a newer connection there",
            )
            self.bound_elsewhere(Taken(to, epoch, kept, tuple(moved)))

    def keep_or_let_go(self, to: str, agents: list[tuple[int, ConnectionStatus]]) -> None:
        """Connections that looked live here when `to` bound their agents: still live, this node keeps
        them (a "kept" binding at the next flush tells `to` to close its newer one); else `to` has them."""
        adopted: list[Adopted] = []
        kept = 0
        self._rechecking.difference_update(agent_id for agent_id, _ in agents)
        for agent_id, status in agents:
            silent = self.silent_for(agent_id)
            if silent is None or silent > self.overtake_time:
                if silent is not None:
                    self.let_go(agent_id)
                    self.overtaken += 1
                adopted.append(self._given_up(agent_id, to, status))
                continue
            # The database has the other node's status now: this node's next message writes its own.
            self.store.adopt([Adopted(agent_id, to, status, StatusCode.NONE, 0)])
            self.store.claim(agent_id, kept=True)
            kept += 1
        self.store.adopt(adopted)
        self.kept += kept
        if kept:
            log.info(
                "Node %s bound %d agents whose connection here is live (within %.0f s): kept here, so the "
                "newer connection there is refused",
                to,
                kept,
                self.overtake_time,
            )

    def _given_up(self, agent_id: int, to: str, status: ConnectionStatus) -> Adopted:
        """The agent is `to`'s now: no grace or loss of it runs here any more."""
        self.grace.forget(agent_id)
        if self.losses is not None:
            self.losses.cancel(agent_id)
        return Adopted(agent_id, to, status, StatusCode.NONE, 0)

    def lease_lost(self, why: str) -> None:
        """This node's lease is gone: it must not keep claiming agents. It takes no connection and closes
        those it has (as lost: each agent's grace runs, then the other nodes' bindings decide), so the
        agents fail over; it serves again once it registers again (`ClusterService`)."""
        if self.remoted is not None:
            closed = self.remoted.pause(True)
        else:
            assert self.pool is not None
            self.pool.pause(True)
            closed = sum(1 for _ in self.store.live_agents())
        log.error(
            "Cluster lease lost (%s): this node takes no agent connection and closed %d, so they fail over "
            "to the other nodes; it registers again once its node name is free",
            why,
            closed,
        )

    def lease_regained(self, epoch: int) -> None:
        if self.remoted is not None:
            self.remoted.pause(False)
        else:
            assert self.pool is not None
            self.pool.pause(False)
        log.warning("Cluster lease held again (epoch %d): taking agent connections again", epoch)
