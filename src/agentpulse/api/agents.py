"""The agent endpoints: list, summary, delete, reconnect, and agentpulse's history, stream and chart.

Lists read global.db through the store's reader in the read pool, the same rows `agent_control` and the
query socket read; the summary counts come from the store's in-memory view (no database at all).
"""

from __future__ import annotations

import time
from typing import Any, Final

from agentpulse.api import query
from agentpulse.api.context import ApiContext
from agentpulse.api.errors import ApiError, Failures, data, envelope, envelope_encoded
from agentpulse.api.fields import iso_time, outputs
from agentpulse.api.http import Request, Response, Stream
from agentpulse.api.stream import StreamHub, counts_document
from agentpulse.records import MANAGER_ID
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.agentquery import AgentQuery, AllOf, Expr
from agentpulse.wire.control import FORCE_RECONNECT

LIST_MESSAGES: Final = (
    "All selected agents information was returned",
    "Some agents information was not returned",
    "No agent information was returned",
)
DELETE_MESSAGES: Final = (
    "All selected agents were deleted",
    "Some agents were not deleted",
    "No agents were deleted",
)
RECONNECT_MESSAGES: Final = (
    "Force reconnect command was sent to all agents",
    "Force reconnect command was sent to some agents",
    "Force reconnect command was not sent to any agent",
)
HISTORY_MESSAGES: Final = (
    "All selected agents' history was returned",
    "Some agents' history was not returned",
    "No history was returned",
)
DEFAULT_OLDER_THAN: Final = "7d"  # DELETE /agents (reference 16.3)
HISTORY_LIMIT: Final = 100
MAX_HISTORY: Final = 10000
CHART_MINUTES: Final = 60


async def list_agents(ctx: ApiContext, request: Request, extra: tuple[Expr, ...] = ()) -> Response:
    parsed = query.agents_request(request, time.time(), extra=extra)
    reader = ctx.reader

    def run() -> Response:
        # the items are built as JSON by the store's backend: no Python object per agent
        page = reader.agents_json(parsed.query, outputs(parsed.select))
        failures = Failures()
        if parsed.ids:
            known = reader.existing_ids(parsed.ids)
            for agent_id in dict.fromkeys(parsed.ids):
                if agent_id not in known:
                    failures.add(1701, f"{agent_id:03d}")
        return envelope_encoded(page.items, page.total, failures, LIST_MESSAGES)

    return await ctx.read(run)


async def summary(ctx: ApiContext, request: Request) -> Response:
    counts = ctx.store.view.status_counts()
    connection = {status.value: counts[status] for status in ConnectionStatus}
    connection["total"] = sum(counts.values())
    config = await ctx.config_counts()
    synced, unsynced = config.get("synced", 0), config.get("not synced", 0)
    return data(
        {
            "connection": connection,
            "configuration": {"synced": synced, "not_synced": unsynced, "total": synced + unsynced},
        }
    )


def _requested_ids(request: Request, *, required: bool) -> tuple[list[int] | None, bool]:
    """(ids, implicit): None for `all` or (when not required) an omitted list."""
    text = request.param("agents_list")
    if text is None:
        if required:
            raise ApiError(400, "Bad Request", "Missing query parameter 'agents_list'")
        return None, True
    if text.strip().lower() == "all":
        return None, True
    return query.id_list(text), False


async def delete_agents(ctx: ApiContext, request: Request) -> Response:
    ids, implicit = _requested_ids(request, required=True)
    status_text = request.param("status")
    if status_text is None:
        raise ApiError(400, "Bad Request", "Missing query parameter 'status'")
    now = time.time()
    parts: list[Expr] = []
    if status_text.strip().lower() != "all":
        parts.append(query.status_filter(status_text))
    older = request.param("older_than") or DEFAULT_OLDER_THAN
    seconds = query.timeframe(older)
    if seconds is None:
        raise ApiError(400, "Bad Request", "TimeFrame is not valid", 1411)
    if seconds > 0:
        parts.append(query.older_than(seconds, now))
    for part in query.filters(_without(request, ("status", "older_than")), now):
        parts.append(part)
    purge = (request.param("purge") or "false").lower() == "true"
    where = AllOf(tuple(parts)) if parts else None
    reader = ctx.reader
    candidates = AgentQuery(where=where, limit=None, ids=tuple(ids) if ids is not None else None)
    page = await ctx.read(lambda: reader.agents_page(candidates))
    eligible = [int(str(row["id"])) for row in page.rows if int(str(row["id"])) != MANAGER_ID]
    failures = Failures()
    if ids is not None:
        known = await ctx.read(lambda: reader.existing_ids(ids))
        chosen = set(eligible)
        for agent_id in dict.fromkeys(ids):
            if agent_id == MANAGER_ID:
                failures.add(1703, "000")
            elif agent_id not in known:
                failures.add(1701, f"{agent_id:03d}")
            elif agent_id not in chosen:
                failures.add(1731, f"{agent_id:03d}")
    removed = await ctx.link.remove_agents(eligible, purge) if eligible else []
    if implicit:
        failures.drop((1701, 1703, 1731))
    items = [f"{i:03d}" for i in removed]
    return envelope(items, len(removed), failures, DELETE_MESSAGES, extra={"older_than": older})


def _without(request: Request, names: tuple[str, ...]) -> Request:
    return Request(
        request.method,
        request.path,
        [(k, v) for k, v in request.query if k not in names],
        request.headers,
        request.body,
        request.client,
    )


async def reconnect(ctx: ApiContext, request: Request) -> Response:
    ids, implicit = _requested_ids(request, required=False)
    agents = ctx.store.agents
    wanted = ids if ids is not None else sorted(agents)
    failures = Failures()
    active: list[int] = []
    for agent_id in dict.fromkeys(wanted):
        view = agents.get(agent_id)
        if agent_id == MANAGER_ID:
            failures.add(1703, "000")
        elif view is None:
            failures.add(1701, f"{agent_id:03d}")
        elif view.status is not ConnectionStatus.ACTIVE:
            failures.add(1707, f"{agent_id:03d}")
        else:
            active.append(agent_id)
    if active:
        ctx.link.send_to_agents(active, FORCE_RECONNECT)
    if implicit:
        failures.drop((1701, 1703, 1707))
    return envelope([f"{i:03d}" for i in active], len(active), failures, RECONNECT_MESSAGES)


async def history(ctx: ApiContext, request: Request, agent_text: str) -> Response:
    if not agent_text.isdigit() or len(agent_text) > 10:
        raise ApiError(400, "Bad Request", f"'{agent_text[:20]}' does not match '^[0-9]{{3,}}$' - 'agent_id'")
    agent_id = int(agent_text)
    limit = query.integer(request, "limit", HISTORY_LIMIT, 1, MAX_HISTORY)
    reader = ctx.reader
    rows = await ctx.read(lambda: reader.history(agent_id, limit))
    failures = Failures()
    if not rows and agent_id not in ctx.store.view:
        failures.add(1701, f"{agent_id:03d}")
    items = [
        {
            "id": f"{agent_id:03d}",
            "seq": row.seq,
            "from": row.from_status,
            "to": row.to_status,
            "status_code": row.code,
            "reason": _reason(row.code, row.from_status, row.to_status),
            "at": iso_time(row.at),
            "at_epoch": row.at,
        }
        for row in rows
    ]
    return envelope(items, len(items), failures, HISTORY_MESSAGES)


def _reason(code: int, from_status: str, to_status: str) -> str:
    if from_status == to_status == ConnectionStatus.NEVER_CONNECTED.value and code == 0:
        return "registered"
    if to_status == ConnectionStatus.DISCONNECTED.value and (code == 0 or from_status == to_status):
        return "removed"
    try:
        return StatusCode(code).reason
    except ValueError:
        return "unknown"


async def stream(hub: StreamHub, request: Request) -> Stream | Response:
    if hub.full():
        raise ApiError(429, "Too Many Requests", "Too many event streams open")
    wanted = (request.param("snapshot") or "false").lower()
    if wanted not in ("false", "true", "agents"):
        raise ApiError(400, "Bad Request", "snapshot must be false, true or agents")
    snapshot = None if wanted == "false" else hub.snapshot(with_agents=wanted == "agents")
    return Stream(hub.follow(snapshot))


async def status_history(ctx: ApiContext, request: Request) -> Response:
    """Counts per status for each of the last `minutes` minutes, rebuilt from the current counts and the
    history rows since (agentpulse: the page's chart)."""
    minutes = query.integer(request, "minutes", CHART_MINUTES, 1, 24 * 60)
    now = time.time()
    since = now - minutes * 60
    reader = ctx.reader
    buckets = await ctx.read(lambda: reader.changes_by_minute(since))
    counts = {status.value: n for status, n in ctx.store.view.status_counts().items()}
    series: list[dict[str, Any]] = []
    current_minute = int(now // 60)
    by_minute: dict[int, list[tuple[str, str, int, int]]] = {}
    for minute, from_status, to_status, code, count in buckets:
        by_minute.setdefault(minute, []).append((from_status, to_status, code, count))
    for minute in range(current_minute, current_minute - minutes, -1):
        series.append({"at": iso_time(minute * 60), **counts})
        for from_status, to_status, code, count in by_minute.get(minute, ()):
            _undo(counts, from_status, to_status, code, count)
    series.reverse()
    return data(
        {"minutes": minutes, "series": series, "now": counts_document(ctx.store.view.status_counts())}
    )


def _undo(counts: dict[str, int], from_status: str, to_status: str, code: int, count: int) -> None:
    """Counts before `count` changes from -> to (a registration added an agent, a removal took one)."""
    reason = _reason(code, from_status, to_status)
    if reason == "registered":
        counts[to_status] = counts.get(to_status, 0) - count
    elif reason == "removed":
        counts[from_status] = counts.get(from_status, 0) + count
    else:
        counts[to_status] = counts.get(to_status, 0) - count
        counts[from_status] = counts.get(from_status, 0) + count
