"""The group endpoints: list and create groups, list a group's agents, assign and unassign agents.

Writes go through the store's group changes (as the query socket's set-agent-groups does) and are
answered once committed, so a client reads back what it wrote. Names follow Wazuh's rule (1722).
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from agentpulse.api import agents, query
from agentpulse.api.context import ApiContext
from agentpulse.api.errors import ApiError, Failures, bad_request, data, envelope
from agentpulse.api.http import Request, Response
from agentpulse.records import MANAGER_ID
from agentpulse.store.agentquery import AgentField, AgentQuery, Condition, Op
from agentpulse.store.batch import GroupChange, GroupChangeKind, GroupMode
from agentpulse.store.groups import DEFAULT_GROUP

GROUP_NAME: Final = re.compile(r"^[\w.\-]{1,255}$")
RESERVED: Final = (".", "..", "agent-template.conf")
MAX_GROUPS: Final = 128  # per agent (Wazuh's MAX_GROUPS_PER_MULTIGROUP)
GROUP_MESSAGES: Final = (
    "All selected groups information was returned",
    "Some groups information was not returned",
    "No group information was returned",
)
HASHES: Final = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")


def check_name(name: str) -> str:
    if not GROUP_NAME.match(name):
        raise bad_request(1722)
    if name in RESERVED:
        raise bad_request(1713)
    return name


def _file_hash(path: Path, algorithm: str) -> str | None:
    try:
        return hashlib.new(algorithm, path.read_bytes()).hexdigest()
    except OSError:
        return None


async def list_groups(ctx: ApiContext, request: Request) -> Response:
    limit = query.integer(request, "limit", query.DEFAULT_LIMIT, 1, query.MAX_LIMIT)
    offset = query.integer(request, "offset", 0, 0, 2**31)
    algorithm = request.param("hash") or "md5"
    if algorithm not in HASHES:
        raise ApiError(400, "Bad Request", f"'{algorithm[:20]}' is not one of {list(HASHES)} - 'hash'")
    listed = request.param("groups_list")
    wanted = [g.strip() for g in listed.split(",")] if listed else None
    search = request.param("search") or ""
    sort = request.param("sort") or "+name"
    select = query.select_fields_of(request.param("select"), ("name", "count", "mergedSum", "configSum"))
    shared = ctx.shared_dir
    reader = ctx.reader

    def run() -> Response:
        counts = reader.group_counts()
        failures = Failures()
        names = list(counts)
        if wanted is not None:
            for name in wanted:
                if name not in counts:
                    failures.add(1710, name)
            names = [name for name in names if name in wanted]
        if search:
            negate, text = search.startswith("-"), search.lstrip("-").lower()
            names = [name for name in names if (text in name.lower()) != negate]
        items = [_group_item(name, counts[name], shared, algorithm) for name in names]
        items = _sorted(items, sort)
        page = [_project(i, select) for i in items[offset : offset + limit]]
        return envelope(page, len(items), failures, GROUP_MESSAGES)

    return await ctx.read(run)


def _group_item(name: str, count: int, shared: Path, algorithm: str) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "count": count}
    merged = _file_hash(shared / name / "merged.mg", algorithm)
    config = _file_hash(shared / name / "agent.conf", algorithm)
    if merged is not None:
        item["mergedSum"] = merged
    if config is not None:
        item["configSum"] = config
    return item


def _sorted(items: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    for part in reversed([p.strip() for p in sort.split(",")]):
        field = part.lstrip("+-")
        if field not in ("name", "count"):
            raise bad_request(1403, f"Not a valid sort field: {field[:40]}")
        items = sorted(items, key=operator.itemgetter(field), reverse=part.startswith("-"))
    return items


def _project(item: dict[str, Any], select: frozenset[str] | None) -> dict[str, Any]:
    if select is None:
        return item
    return {k: v for k, v in item.items() if k in select or k == "name"}


async def create_group(ctx: ApiContext, request: Request) -> Response:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise ApiError(400, "Bad Request", "Invalid JSON body") from None
    name = body.get("group_id") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise ApiError(400, "Bad Request", "'group_id' is a required property")
    check_name(name)
    reader = ctx.reader
    if await ctx.read(lambda: reader.group_id(name)) is not None:
        raise bad_request(1711)
    ctx.store.change_groups([GroupChange(GroupChangeKind.CREATE, (name,))])
    await ctx.committed()
    return data({}, f"Group '{name}' created.")


async def _require_group(ctx: ApiContext, name: str) -> None:
    reader = ctx.reader
    if await ctx.read(lambda: reader.group_id(name)) is None:
        message, remediation = (
            "The group does not exist",
            "Please, use `GET /groups` to find all available groups",
        )
        raise ApiError(404, "Resource Not Found", message, 1710, remediation)


async def group_agents(ctx: ApiContext, request: Request, name: str) -> Response:
    check_name(name)
    await _require_group(ctx, name)
    return await agents.list_agents(ctx, request, (Condition(AgentField.GROUP, Op.IN_GROUP, name),))


def _groups_of(row: dict[str, object]) -> list[str]:
    return [g for g in str(row.get("group") or "").split(",") if g]


async def _member_rows(ctx: ApiContext, ids: list[int] | None) -> dict[int, dict[str, object]]:
    reader = ctx.reader
    wanted = AgentQuery(limit=None, ids=tuple(ids) if ids is not None else None)
    page = await ctx.read(lambda: reader.agents_page(wanted))
    return {int(str(row["id"])): row for row in page.rows}


async def assign(ctx: ApiContext, request: Request) -> Response:
    name = check_name(_group_param(request))
    await _require_group(ctx, name)
    force = (request.param("force_single_group") or "false").lower() == "true"

    def refusal(groups: list[str]) -> int | None:
        if force:
            return None
        if name in groups:
            return 1751
        return 1737 if len(groups) >= MAX_GROUPS else None

    suffix = " and removed from the other groups" if force else ""
    messages = (
        f"All selected agents were assigned to {name}{suffix}",
        f"Some agents were not assigned to {name}{suffix}",
        "No agents were assigned to the group",
    )
    mode = GroupMode.OVERRIDE if force else GroupMode.APPEND
    return await _change_members(ctx, request, name, mode, refusal, (1701, 1703), messages)


async def unassign(ctx: ApiContext, request: Request) -> Response:
    name = check_name(_group_param(request))
    await _require_group(ctx, name)

    def refusal(groups: list[str]) -> int | None:
        if name not in groups:
            return 1734
        return 1745 if groups == [DEFAULT_GROUP] else None

    messages = (
        f"All selected agents were removed from group {name}",
        f"Some agents were not removed from group {name}",
        "No agent was removed from any group",
    )
    return await _change_members(ctx, request, name, GroupMode.REMOVE, refusal, (1701, 1703, 1734), messages)


async def _change_members(
    ctx: ApiContext,
    request: Request,
    name: str,
    mode: GroupMode,
    refusal: Callable[[list[str]], int | None],
    unlisted: tuple[int, ...],
    messages: tuple[str, str, str],
) -> Response:
    """Assign or unassign the agents of `agents_list` (all agents without it): the manager and unknown ids
    fail, as does an agent whose groups `refusal` gives an error code for; the failures in `unlisted` are
    not reported when the client named no agents."""
    listed = request.param("agents_list")
    ids = query.id_list(listed) if listed else None
    rows = await _member_rows(ctx, ids)
    failures = Failures()
    changes: list[GroupChange] = []
    done: list[str] = []
    for agent_id in dict.fromkeys(ids if ids is not None else sorted(rows)):
        text = f"{agent_id:03d}"
        row = rows.get(agent_id)
        if agent_id == MANAGER_ID:
            code: int | None = 1703
        elif row is None:
            code = 1701
        else:
            code = refusal(_groups_of(row))
        if code is not None:
            failures.add(code, text)
        else:
            changes.append(GroupChange(GroupChangeKind.SET, (name,), agent_id, mode))
            done.append(text)
    if ids is None:
        failures.drop(unlisted)
    if changes:
        ctx.store.change_groups(changes)
        await ctx.committed()
    return envelope(done, len(done), failures, messages)


def _group_param(request: Request) -> str:
    name = request.param("group_id")
    if name is None:
        raise ApiError(400, "Bad Request", "Missing query parameter 'group_id'")
    return name
