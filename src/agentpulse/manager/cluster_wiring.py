"""Several nodes on one PostgreSQL (docs/cluster.md): what a manager adds to itself to be one of them."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

from agentpulse.cluster.bindings import BindingsWatch
from agentpulse.cluster.follow import NodeFollow
from agentpulse.cluster.holders import HoldersFeed
from agentpulse.cluster.keysync import KeysSync
from agentpulse.cluster.lease import Connection, ExpiredLease, renew_interval_for
from agentpulse.cluster.losses import LossGate
from agentpulse.cluster.service import ClusterService
from agentpulse.manager.keyedits import unlink_all
from agentpulse.store.postgresql.connect import conninfo
from agentpulse.store.postgresql.takeover import disconnect_node

if TYPE_CHECKING:
    from agentpulse.manager.core import Manager

log = logging.getLogger(__name__)


def join_cluster(manager: Manager) -> None:
    """This node's lease (its epoch goes beside each agent it holds) and its part in the leader election,
    as the first service: started before any agent is served, stopped (the lease released) after
    everything else; then how it follows the other nodes' writes."""
    config = manager.config
    dsn, node = conninfo(config.database), config.global_.node_name
    # How this node follows the others' writes: a loss here is decided against their bindings
    # (the late-grace race), it hears at once when another one takes its agents (the cross-node
    # overtake rule), and it lets its agents go while it has no lease.
    follow = NodeFollow(
        manager.store, manager.grace, manager.remoted, manager.pool, config.remote.connection_overtake_time
    )
    manager.cluster = ClusterService(
        dsn,
        node,
        grace=config.remote.connection_grace,
        ttl=config.global_.lease_ttl,
        renew_interval=renew_interval_for(config.global_.lease_ttl),
        on_epoch=manager.store.set_node_epoch,
        on_node_expired=partial(take_over, manager),
        on_lease_lost=follow.lease_lost,
        on_lease_regained=follow.lease_regained,
    )
    manager.services.append(manager.cluster)
    manager.losses = follow.losses = LossGate(
        dsn,
        node,
        submit=manager.store.submit,
        adopt=manager.store.adopt,
        still_lost=follow.still_lost,
        tick=manager.store.apply_adopted,
    )
    # The view follows the agents other nodes hold, from the database; it also finds there the
    # bindings whose notification was missed (read at once when LISTEN is back).
    holders = HoldersFeed(dsn, node, follow.followed, lambda: manager.store.settled)
    manager.front_services.extend(
        [holders, BindingsWatch(dsn, node, follow.bound_elsewhere, holders.catch_up), manager.losses]
    )

    # Keys enrolled on another node, from the database into this node's client.keys; and
    # agents removed on another node removed here.
    manager.front_services.append(
        KeysSync(
            dsn,
            node,
            manager.home.client_keys,
            manager.keys.__contains__,
            manager.keys_watcher.trigger,
            removed=partial(removed_elsewhere, manager),
            in_db=lambda: manager.store.loaded,
        )
    )
    manager.upkeep.active = lambda: manager.cluster is not None and manager.cluster.leader


async def take_over(manager: Manager, conn: Connection, lease: ExpiredLease) -> None:
    """The leader, in the transaction that claims a dead node's lease: its agents that did not come
    back elsewhere within the grace become disconnected, code 6 (docs/cluster.md)."""
    rows = await disconnect_node(conn, lease.name, lease.epoch, time.time(), manager.store.outbox_encoder)
    log.warning(
        "Node %s (epoch %d) is gone: %d of its agents did not reconnect elsewhere within %.0f s and "
        "are disconnected (code 6)",
        lease.name,
        lease.epoch,
        len(rows),
        manager.config.remote.connection_grace,
    )


async def removed_elsewhere(manager: Manager, ids: list[int]) -> None:
    """Agents another node removed: out of this node's view first (their removal row is written
    already, and their connection's loss must not add one), then out of client.keys (marked `!`, as
    manage_agents -r does) and remoted, which closes their connections."""
    manager.store.forget_removed(ids, time.time())
    lines = await manager.key_reloads.remove(ids, purge=False)
    await asyncio.to_thread(unlink_all, [manager.home.rids_file(f"{agent_id:03d}") for agent_id in ids])
    log.info("Removed %d agents that another node removed", len(lines))
