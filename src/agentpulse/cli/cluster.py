"""`agentpulse cluster status`: the nodes sharing this home's database, their leases, the agents each holds,
and whether the database answers. On SQLite there is one node, and it says so.

Times are the database's (the lease's clock), so a node whose own clock is off still reads right. Node and
host names come from the database: printed through `for_terminal`. The sweeper leader and NATS health are
not shown yet (issue 16, items 2 and 4).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from agentpulse.cli.database import database_config
from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.config.xmltree import ConfigError
from agentpulse.escape import for_terminal
from agentpulse.store.reader import ReadFailed

if TYPE_CHECKING:  # psycopg is imported only for a PostgreSQL home
    from agentpulse.store.postgresql.reads import PostgresReader

PROG = "agentpulse cluster"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("cluster", help="the nodes sharing the database (PostgreSQL)")
    add_home_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("status", help="nodes, their leases, agents per node, database health")
    parser.set_defaults(handler=run)


def _counts(by_status: dict[str, int]) -> str:
    return ", ".join(f"{status} {count}" for status, count in sorted(by_status.items())) or "no agents"


def status_text(reader: PostgresReader) -> str:
    lines = []
    per_node = reader.agents_per_node()
    nodes = reader.nodes()
    lines.append(f"Nodes: {len(nodes)}")
    for node in nodes:
        if node.expired:
            lease = f"lease EXPIRED {node.now - node.expires_at:.1f} s ago"
        else:
            lease = f"lease renewed {node.now - node.renewed_at:.1f} s ago, expires in {node.expires_at - node.now:.1f} s"
        lines.append(
            f"  {for_terminal(node.name)}  epoch {node.epoch}  host {for_terminal(node.host or '?')}  {lease}  "
            f"agents: {_counts(per_node.get(node.name, {}))}"
        )
    lines.append("Sweeper leader: not elected yet (every node sweeps its own agents)")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    home = resolve_home(args)
    try:
        config = database_config(home)
    except ConfigError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    if config.backend != "postgresql":
        print("One node on SQLite (queue/db/global.db): nothing is shared; see docs/cluster.md.")
        return 0
    from agentpulse.store.postgresql.connect import conninfo, redacted
    from agentpulse.store.postgresql.reads import PostgresReader

    info = conninfo(config)
    reader = PostgresReader(info)
    try:
        if not reader.exists():
            print(f"Database: PostgreSQL {redacted(info)}: reachable, no agentpulse tables yet")
            return 1
        text = status_text(reader)
    except ReadFailed as error:
        print(f"Database: {error}", file=sys.stderr)
        return 1
    finally:
        reader.close()
    sys.stdout.write(f"Database: PostgreSQL {redacted(info)}: reachable\n{text}")
    return 0
