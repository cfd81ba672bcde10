"""Helpers for the tests of several real nodes on one PostgreSQL: homes sharing one client.keys, and who
holds the leader lock now."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import psycopg

from agentpulse.cluster import sql
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import ManagerProcess, ManagerSettings
from tests.e2e.wdb_tools import write_keys


def leader(dsn: str) -> str | None:
    """The node holding the leader lock (from pg_locks), or None between a death and an election."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.LOCK_HOLDER, (sql.SWEEPER_LOCK, sql.SWEEPER_LOCK)).fetchone()
    return str(row[0]).split(":")[1] if row else None


def make_nodes(
    root: Path, dsn: str, names: list[str], agents: int, settings: Callable[[str], ManagerSettings]
) -> tuple[list[ManagerProcess], list[AgentKey]]:
    """One home per node name (`settings(node_name)`), all on `dsn`, with the same client.keys of
    `agents` agents; not started."""
    nodes = [ManagerProcess(root / name, settings(name)) for name in names]
    for node in nodes:
        node.use_postgresql(dsn)
    keys = write_keys(nodes[0], agents)
    for node in nodes[1:]:
        node.home.create_layout()
        shutil.copy(nodes[0].home.client_keys, node.home.client_keys)
    return nodes, keys
