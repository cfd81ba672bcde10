"""Group commands: create and delete groups, set an agent's groups, list groups and their members, and
`force_reconnect` (agentpulse's `remoted force-reconnect <group>`: tell every connected member to
reconnect; the `remoted` actor is in `remoted.py`).

Group names are checked here (Wazuh's rule: letters, digits, `_`, `-`, `.`; not `.` or `..`), since a name
becomes a directory of shared files. An agent's groups keep Wazuh's priority order; `default` stays.
"""

from __future__ import annotations

import logging

from agentpulse.shared.names import valid_group
from agentpulse.store.batch import GroupChange, GroupChangeKind, GroupMode
from agentpulse.store.groups import DEFAULT_GROUP, group_hash
from agentpulse.wdb.commands.arguments import json_int, parse_json
from agentpulse.wdb.commands.context import Command, Context
from agentpulse.wdb.protocol import Reply, WdbError, atoi, dumps, near, rows_to_fill
from agentpulse.wire.control import FORCE_RECONNECT

log = logging.getLogger(__name__)

MODES = ("override", "append", "empty_only", "remove")
SYNC_VALUES = ("synced", "syncreq")  # what set-agent-groups may set group_sync_status to
SET_FAILED = "An error occurred during the set of the groups"
MEMBER_ITEM_SIZE = 1  # an id list of get-group-agents is bare numbers


async def insert_agent_group(ctx: Context, argument: str) -> Reply:
    name = argument.strip()
    if not valid_group(name):
        raise WdbError("Error inserting group in global.db.")
    ctx.store.change_groups([GroupChange(GroupChangeKind.CREATE, (name,))])
    await ctx.committed()
    if ctx.shared is not None:  # its folder in etc/shared, with the stock agent.conf
        await ctx.shared.create_group(name)
    return "ok"


async def delete_group(ctx: Context, argument: str) -> Reply:
    name = argument.strip()
    if name == DEFAULT_GROUP or not valid_group(name):
        raise WdbError("Error deleting group in global.db.")
    ctx.store.change_groups([GroupChange(GroupChangeKind.DELETE, (name,))])
    await ctx.committed()
    return "ok"


def _group_change(ctx: Context, item: object, mode: str, sync: str) -> GroupChange:
    agent_id = json_int(item.get("id")) if isinstance(item, dict) else None
    groups = item.get("groups") if isinstance(item, dict) else None
    if (
        agent_id is None
        or not ctx.known(agent_id)
        or not isinstance(groups, list)
        or not all(isinstance(g, str) and valid_group(g) for g in groups)
    ):
        raise WdbError(SET_FAILED)
    return GroupChange(GroupChangeKind.SET, tuple(groups), agent_id, GroupMode(mode), sync)


async def set_agent_groups(ctx: Context, argument: str) -> Reply:
    data = parse_json(argument)
    if not isinstance(data, dict):
        raise WdbError("Invalid JSON data, missing required fields")
    mode, items = data.get("mode"), data.get("data")
    if not isinstance(mode, str) or not isinstance(items, list):
        raise WdbError("Invalid JSON data, missing required fields")
    if mode not in MODES:
        raise WdbError(f"Invalid mode '{near(mode)}' in set_agent_groups command")
    sync = data.get("sync_status", "synced")
    if sync not in SYNC_VALUES:
        raise WdbError(SET_FAILED)
    changes = [_group_change(ctx, item, mode, sync) for item in items]
    ctx.store.change_groups(changes)
    await ctx.committed()
    return "ok"


async def get_distinct_groups(ctx: Context, argument: str) -> Reply:
    last_hash = (argument or "").strip()

    def items() -> list[dict[str, str]]:
        groups: dict[str, str] = {}
        for csv, stored_hash in ctx.reader.group_sets():
            digest = stored_hash or group_hash(csv.split(","))
            if digest is not None and digest > last_hash:
                groups.setdefault(digest, csv)
        return [{"group": groups[digest], "group_hash": digest} for digest in sorted(groups)]

    return await ctx.read_page(items)


async def select_groups(ctx: Context, argument: str) -> Reply:
    return await ctx.read_json(
        lambda: [{} if name is None else {"name": name} for name in ctx.reader.group_names()]
    )


async def find_group(ctx: Context, argument: str) -> Reply:
    def rows() -> list[dict[str, int]]:
        group_id = ctx.reader.group_id(argument)
        return [] if group_id is None else [{"id": group_id}]

    return await ctx.read_json(rows)


async def select_group_belong(ctx: Context, argument: str) -> Reply:
    agent_id = atoi(argument)
    return await ctx.read_json(lambda: ctx.reader.agent_groups(agent_id))


async def get_group_agents(ctx: Context, argument: str) -> Reply:
    words = argument.split()
    if not words:
        raise WdbError("Invalid arguments, group name not found.")
    if len(words) < 2 or words[1] != "last_id":
        raise WdbError("Invalid arguments, 'last_id' not found.")
    if len(words) < 3:
        raise WdbError("Invalid arguments, last agent id not found.")
    name, last_id = words[0], atoi(words[2])
    return await ctx.read_page(
        lambda: ctx.reader.group_members(name, last_id, rows_to_fill(MEMBER_ITEM_SIZE)) or []
    )


async def force_reconnect(ctx: Context, argument: str) -> Reply:
    """`remoted force-reconnect <group>`."""
    name = argument.strip()
    if not name:
        return "err Invalid DB query syntax, near 'force-reconnect'"
    ids = await ctx.read(lambda: ctx.reader.group_members(name))
    if ids is None:
        return f"err Group '{near(name)}' not found"
    sent = 0 if ctx.send_to_agents is None else ctx.send_to_agents(ids, FORCE_RECONNECT)
    log.info("Force reconnect of group %s: %d members, %d connected told", name, len(ids), sent)
    return "ok " + dumps({"group": name, "members": len(ids), "sent": sent})


COMMANDS = {
    "set-agent-groups": Command(set_agent_groups),
    "get-distinct-groups": Command(get_distinct_groups, needs_argument=False),
    "insert-agent-group": Command(insert_agent_group),
    "delete-group": Command(delete_group),
    "select-groups": Command(select_groups, needs_argument=False),
    "find-group": Command(find_group),
    "get-group-agents": Command(get_group_agents),
    "select-group-belong": Command(select_group_belong),
}
