"""What `agentpulse cluster status` shows, gathered: the nodes and their leases, the leader, agents per node,
and the health of the database and of each NATS server (with the status and agent events streams' replicas).

Read-only and bounded: every connection has a short timeout, and a part that cannot be read says why
instead of failing the rest. The danger is reading the wrong thing as truth: lease times are compared on
the database's clock, never this machine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg

from agentpulse.cluster.leader import lock_holder
from agentpulse.cluster.lease import NodeRow, connect, read_nodes
from agentpulse.jetstream import StreamHealth, stream_health
from agentpulse.store.sqlite import schema

NATS_TIMEOUT: Final = 2.0
STREAM_ATTEMPTS: Final = 4
STREAM_RETRY_DELAY: Final = 1.0

AGENTS_BY_NODE: Final = (
    "SELECT COALESCE(node_name, ''), connection_status, COUNT(*) FROM agent WHERE id > 0 GROUP BY 1, 2"
)


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    kind: str  # "sqlite" or "postgresql"
    where: str  # the file, or host:port/dbname (never a password)
    up: bool
    detail: str  # the server version, or why it cannot be read
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class NatsServerHealth:
    url: str
    up: bool
    detail: str  # the server's name and version, or why not


@dataclass
class ClusterReport:
    database: DatabaseHealth
    node_name: str  # this home's <node_name>
    nodes: list[NodeRow] = field(default_factory=list)
    leases: str = ""  # why there are none, when there are none
    leader: str | None = None
    agents_by_node: dict[str, dict[str, int]] = field(default_factory=dict)
    agents_note: str = ""
    nats: list[NatsServerHealth] = field(default_factory=list)
    stream: StreamHealth | None = None
    stream_note: str = ""
    events_stream: StreamHealth | None = None  # AGENT_EVENTS, when agent events are on
    events_stream_note: str = ""

    @property
    def single_node(self) -> bool:
        return self.database.kind == "sqlite"

    @property
    def healthy(self) -> bool:
        """The database answers, no node's lease is expired and unclaimed, and every NATS server is up."""
        unclaimed = any(node.expired and not node.claimed for node in self.nodes)
        return self.database.up and not unclaimed and all(server.up for server in self.nats)


# -- the database ---------------------------------------------------------------------------------------


def sqlite_report(global_db: Path, node_name: str) -> ClusterReport:
    """One node on SQLite: no leases and no leader, only its agents (by the node_name they were seen on)."""
    report = ClusterReport(
        DatabaseHealth("sqlite", str(global_db), False, ""),
        node_name,
        leases="a single node on SQLite holds no lease and elects no leader",
    )
    if not global_db.exists():
        report.database = DatabaseHealth(
            "sqlite", str(global_db), False, "no database yet (no manager has run in this home)"
        )
        return report
    started = time.perf_counter()
    try:
        conn = schema.connect(global_db, readonly=True)
        try:
            rows = list(conn.execute(AGENTS_BY_NODE))
            version = str(conn.execute("SELECT sqlite_version()").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as error:
        report.database = DatabaseHealth("sqlite", str(global_db), False, f"cannot read it: {error}")
        return report
    latency = (time.perf_counter() - started) * 1000
    report.database = DatabaseHealth("sqlite", str(global_db), True, f"SQLite {version}", latency)
    report.agents_by_node = _by_node(rows)
    return report


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a DSN, for display (no user, no password)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
    pairs = dict(item.split("=", 1) for item in dsn.split() if "=" in item)
    return f"{pairs.get('host', 'localhost')}:{pairs.get('port', '5432')}/{pairs.get('dbname', '')}"


async def postgres_report(dsn: str, node_name: str) -> ClusterReport:
    where = describe_dsn(dsn)
    report = ClusterReport(DatabaseHealth("postgresql", where, False, ""), node_name)
    started = time.perf_counter()
    try:
        conn = await connect(dsn, "agentpulse:status")
    except (psycopg.Error, OSError) as error:
        report.database = DatabaseHealth("postgresql", where, False, f"cannot connect: {_first_line(error)}")
        return report
    try:
        cursor = await conn.execute("SHOW server_version")
        row = await cursor.fetchone()
        latency = (time.perf_counter() - started) * 1000
        version = f"PostgreSQL {row[0] if row else '?'}"
        report.database = DatabaseHealth("postgresql", where, True, version, latency)
        await _leases(conn, report)
        holder = await lock_holder(conn)
        report.leader = holder.node if holder is not None else None
        await _agents(conn, report)
    except psycopg.Error as error:
        report.database = DatabaseHealth("postgresql", where, False, f"cannot read it: {_first_line(error)}")
    finally:
        await conn.close()
    return report


async def _leases(conn: Any, report: ClusterReport) -> None:
    try:
        report.nodes = await read_nodes(conn)
    except psycopg.errors.UndefinedTable:
        report.leases = "no node has held a lease in this database yet (no cluster_node table)"
    if not report.nodes and not report.leases:
        report.leases = "no node holds a lease"


async def _agents(conn: Any, report: ClusterReport) -> None:
    try:
        cursor = await conn.execute(AGENTS_BY_NODE)
        report.agents_by_node = _by_node(await cursor.fetchall())
    except psycopg.errors.UndefinedTable:
        report.agents_note = "no agent table in this database yet (no node stores its agents here)"


def _by_node(rows: list[Any]) -> dict[str, dict[str, int]]:
    by_node: dict[str, dict[str, int]] = {}
    for node, status, count in rows:
        by_node.setdefault(str(node), {})[str(status)] = int(count)
    return by_node


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# -- NATS -----------------------------------------------------------------------------------------------


async def nats_report(
    report: ClusterReport,
    urls: list[str],
    options: dict[str, Any],
    stream: str,
    events_stream: str | None = None,
) -> None:
    """Each server on its own connection (no discovery, no reconnect), then the status stream (and the
    agent events' stream, if named) from any that is up."""
    report.nats = list(await asyncio.gather(*(_nats_server(url, options) for url in urls)))
    up = [health.url for health, url in zip(report.nats, urls, strict=True) if health.up]
    if not up:
        report.stream_note = "no NATS server answers" if urls else "no NATS server is configured"
        return
    report.stream, report.stream_note = await _stream_of(up, options, stream)
    if events_stream is not None:
        report.events_stream, report.events_stream_note = await _stream_of(up, options, events_stream)


async def _stream_of(up: list[str], options: dict[str, Any], name: str) -> tuple[StreamHealth | None, str]:
    """Right after a server is lost the stream may be electing a new leader and stream_info times out:
    ask the servers that are up in turn, a bounded number of times, before calling it unreadable."""
    health, note = None, ""
    for attempt in range(STREAM_ATTEMPTS):
        health, note = await _stream(up[attempt % len(up)], options, name)
        if health is not None or "does not exist" in note:
            break
        await asyncio.sleep(STREAM_RETRY_DELAY)
    return health, note


async def _quiet(_error: Exception) -> None:
    """nats-py prints a traceback for every connection error unless given a callback: the report says it."""


async def _nats_server(url: str, options: dict[str, Any]) -> NatsServerHealth:
    from nats.aio.client import Client as NATS

    nc = NATS()
    shown = _redact(url)
    try:
        await asyncio.wait_for(
            nc.connect(
                [url],
                **{**options, "connect_timeout": NATS_TIMEOUT},
                allow_reconnect=False,
                error_cb=_quiet,
                max_reconnect_attempts=0,
                dont_randomize=True,
            ),
            NATS_TIMEOUT + 1,
        )
    except Exception as error:  # nats-py raises many kinds; each is "down" with its text
        return NatsServerHealth(shown, False, _first_line(error))
    try:
        info = getattr(nc, "_server_info", {}) or {}
        jetstream = "JetStream" if info.get("jetstream") else "no JetStream"
        name = info.get("server_name") or info.get("server_id", "?")
        return NatsServerHealth(shown, True, f"server {name}, v{info.get('version', '?')}, {jetstream}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), NATS_TIMEOUT)


async def _stream(url: str, options: dict[str, Any], name: str) -> tuple[StreamHealth | None, str]:
    from nats.aio.client import Client as NATS
    from nats.js.errors import NotFoundError

    nc = NATS()
    try:
        await asyncio.wait_for(
            nc.connect(
                [url], **{**options, "connect_timeout": NATS_TIMEOUT}, allow_reconnect=False, error_cb=_quiet
            ),
            NATS_TIMEOUT + 1,
        )
        info = await nc.jetstream(timeout=NATS_TIMEOUT).stream_info(name)
    except NotFoundError:
        return None, f"stream {name} does not exist yet (a node creates it when it first publishes)"
    except Exception as error:
        return None, f"stream {name} cannot be read: {_first_line(error)}"
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), NATS_TIMEOUT)
    return stream_health(info), ""


def _redact(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}"
