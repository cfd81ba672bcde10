"""`agentpulse cluster status`: the nodes of a cluster and their leases, the leader, agents per node, and the
health of the database and of each NATS server; for a single node on SQLite it says so plainly.

Exit codes: 0 healthy, 1 when the database cannot be read, a node's lease expired and no survivor took
its agents over, or a NATS server is down; 2 for a configuration that cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING

from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.escape import for_terminal

if TYPE_CHECKING:
    from agentpulse.cluster.lease import NodeRow
    from agentpulse.cluster.report import ClusterReport
    from agentpulse.config import Config
    from agentpulse.jetstream import StreamHealth

PROGRAM = "agentpulse cluster"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = subparsers.add_parser("cluster", help="several nodes: status of the nodes, leases and leader")
    add_home_option(cluster)  # `cluster --home DIR status`, as `db --home DIR vacuum`
    commands = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status", help="nodes and leases, the leader, agents per node, database and NATS health"
    )
    # `cluster status --home DIR` too; SUPPRESS keeps a --home given before `status`.
    status.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    status.add_argument(
        "--dsn",
        metavar="DSN",
        help="the cluster's PostgreSQL (postgresql://user@host:port/dbname); default: the home's <database>",
    )
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    from agentpulse.cluster.report import nats_report, postgres_report, sqlite_report
    from agentpulse.config import Config, ConfigError, load_config
    from agentpulse.events.service import NatsUnavailable, connect_options

    home = resolve_home(args)
    try:
        config = load_config(home.ossec_conf) if home.ossec_conf.exists() else Config()
    except ConfigError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    node_name = config.global_.node_name
    dsn = args.dsn or _configured_dsn(config)

    async def gather() -> ClusterReport:
        if dsn:
            report = await postgres_report(dsn, node_name)
        else:
            report = await asyncio.to_thread(sqlite_report, home.global_db, node_name)
        if config.nats.enabled:
            urls = list(config.nats.urls)
            if not urls and home.nats_url_file.exists():
                urls = home.nats_url_file.read_text().split()  # the embedded server, while it runs
            try:
                options = connect_options(config.nats)
            except NatsUnavailable as error:
                report.stream_note = str(error)
            else:
                options.pop("name", None)
                events = config.nats.agent_events
                await nats_report(
                    report,
                    urls,
                    {**options, "name": "agentpulse-status"},
                    config.nats.stream,
                    events.stream if events.enabled else None,
                )
        else:
            report.stream_note = "NATS is disabled (<nats><enabled>no)"
        return report

    report = asyncio.run(gather())
    if args.json:
        print(json.dumps(asdict(report), default=_json_value, indent=2))
    else:
        print(render(report))
    return 0 if report.healthy else 1


def _configured_dsn(config: Config) -> str | None:
    """The home's PostgreSQL (`<dsn>` or `<host>`/`<port>`/`<user>`/`<password_file>`...), None on SQLite."""
    if config.database.backend != "postgresql":
        return None
    from agentpulse.store.postgresql.connect import conninfo

    return conninfo(config.database)


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def render(report: ClusterReport) -> str:
    lines: list[str] = []
    db = report.database
    state = f"up ({db.detail}, {db.latency_ms:.0f} ms)" if db.up else f"DOWN: {db.detail}"
    if report.single_node:
        lines.append(
            f"Single node {for_terminal(report.node_name)} on SQLite ({for_terminal(db.where)}): not a "
            "cluster; no leases, no leader election."
        )
        lines.append(f"Database: SQLite {state}")
    else:
        lines.append(f"Database: PostgreSQL at {for_terminal(db.where)}: {state}")
        leader = report.leader
        lines.append(
            f"Leader (take-overs, upkeep, outbox relay): {for_terminal(leader) if leader else 'none right now'}"
        )
        lines.append("Nodes:" if report.nodes else f"Nodes: {report.leases}")
        for node in report.nodes:
            lines.append(f"  {_node_line(node)}")
    lines.extend(_agent_lines(report))
    lines.extend(_nats_lines(report))
    return "\n".join(lines)


def _node_line(node: NodeRow) -> str:
    if node.expired:
        lease = "EXPIRED" + (", agents taken over" if node.claimed else ", agents NOT yet taken over")
    else:
        lease = "live"
    renewed = node.renewed.strftime("%H:%M:%S")
    return (
        f"{for_terminal(node.name):<16} host {for_terminal(node.host):<16} epoch {node.epoch:<4} "
        f"lease {lease} (renewed {renewed}, expires {node.expires.strftime('%H:%M:%S')})"
    )


def _agent_lines(report: ClusterReport) -> list[str]:
    if report.agents_note:
        return [f"Agents per node: {report.agents_note}"]
    if not report.agents_by_node:
        return ["Agents per node: no agents"]
    lines = ["Agents per node (the node each was last seen on):"]
    for node, counts in sorted(report.agents_by_node.items()):
        shown = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        lines.append(f"  {for_terminal(node) or '(never seen)':<16} {shown}")
    return lines


def _nats_lines(report: ClusterReport) -> list[str]:
    lines = []
    if report.nats:
        lines.append("NATS:")
        for server in report.nats:
            lines.append(f"  {server.url:<28} {'up' if server.up else 'DOWN'}: {for_terminal(server.detail)}")
    for stream, note in (
        (report.stream, report.stream_note),
        (report.events_stream, report.events_stream_note),
    ):
        if stream is not None:
            lines.append(_stream_line(stream))
        if note:
            lines.append(f"Stream: {for_terminal(note)}")
    return lines


def _stream_line(stream: StreamHealth) -> str:
    peers = ", ".join(f"{name} {'current' if ok else 'BEHIND/OFFLINE'}" for name, ok in stream.peers.items())
    return (
        f"Stream {for_terminal(stream.name)}: {stream.replicas} replica(s), leader "
        f"{for_terminal(stream.leader or '-')}, {stream.messages} messages" + (f" ({peers})" if peers else "")
    )
