"""Commands on agent rows: read one agent, list agents page by page, find one, insert and delete.

Ids in text arguments are read with C's atoi() (clamped to 64 bits), so nothing a client writes reaches a
binding it would overflow. An insert makes a never-connected agent through the store, a delete goes through
the status model (a removal row), both answered once committed.
"""

from __future__ import annotations

from agentpulse.shared.names import valid_group
from agentpulse.store.batch import InsertedAgent
from agentpulse.store.reader import Row
from agentpulse.store.sqlite import schema
from agentpulse.wdb.commands.arguments import invalid_data, json_int, json_object
from agentpulse.wdb.commands.context import Command, Context
from agentpulse.wdb.protocol import Reply, WdbError, atoi, rows_to_fill

ID_ITEM_SIZE = len('{"id":0}')  # the smallest item of an id list


def _column(row: Row | None, key: str) -> list[Row]:
    """One column of an agent as select-agent-name/-group answer it: no row, or the column unless NULL."""
    return [] if row is None else [{key: row[key]} if key in row else {}]


async def get_agent_info(ctx: Context, argument: str) -> Reply:
    agent_id = atoi(argument)

    def rows() -> list[Row]:
        row = ctx.reader.agent(agent_id)
        return [] if row is None else [row]

    return await ctx.read_json(rows)


async def get_labels(ctx: Context, argument: str) -> Reply:
    agent_id = atoi(argument)
    return await ctx.read_json(lambda: ctx.reader.labels(agent_id))


async def select_agent_name(ctx: Context, argument: str) -> Reply:
    agent_id = atoi(argument)
    return await ctx.read_json(lambda: _column(ctx.reader.agent(agent_id), "name"))


async def select_agent_group(ctx: Context, argument: str) -> Reply:
    agent_id = atoi(argument)
    return await ctx.read_json(lambda: _column(ctx.reader.agent(agent_id), "group"))


async def find_agent(ctx: Context, argument: str) -> Reply:
    data = json_object(argument)
    name, ip = data.get("name"), data.get("ip")
    if not isinstance(name, str) or not isinstance(ip, str):
        raise invalid_data(argument)
    return await ctx.read_json(lambda: [{"id": agent_id} for agent_id in ctx.reader.find_agent(name, ip)])


async def get_all_agents(ctx: Context, argument: str) -> Reply:
    words = argument.split()
    if not words or words[0] not in ("last_id", "context"):
        raise WdbError("Invalid arguments 'last_id' or 'context' not found")
    if words[0] == "context":
        return "ok []"
    if len(words) < 2:
        raise WdbError("Invalid arguments 'last_id' not found")
    last_id = atoi(words[1])
    return await ctx.read_page(
        lambda: ({"id": i} for i in ctx.reader.agent_ids(last_id, rows_to_fill(ID_ITEM_SIZE)))
    )


async def get_agents_by_connection_status(ctx: Context, argument: str) -> Reply:
    words = argument.split()
    if not words:
        raise WdbError("Invalid arguments 'last_id' not found")
    if len(words) < 2:
        raise WdbError("Invalid arguments 'connection_status' not found")
    last_id, status = atoi(words[0]), words[1]
    fill = rows_to_fill(ID_ITEM_SIZE)
    node: str | None = None
    if len(words) > 2:
        if len(words) < 4:
            raise WdbError("Invalid arguments 'limit' not found")
        node, limit = words[2], atoi(words[3])
        fill = min(fill, limit) if limit > 0 else fill
    return await ctx.read_page(
        lambda: ({"id": i} for i in ctx.reader.agent_ids(last_id, fill, status=status, node=node))
    )


async def insert_agent(ctx: Context, argument: str) -> Reply:
    data = json_object(argument)
    agent_id = json_int(data.get("id"))
    date_add = json_int(data.get("date_add"))
    name = data.get("name")
    if agent_id is None or agent_id <= 0 or date_add is None or not isinstance(name, str) or not name:
        raise invalid_data(argument)

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    groups = tuple(g for g in (text("group") or "").split(",") if g)
    if not all(valid_group(g) for g in groups):
        raise invalid_data(argument)
    agent = InsertedAgent(
        agent_id, name, text("ip"), text("register_ip"), text("internal_key"), groups, date_add
    )
    if not ctx.store.insert_agent(agent):
        raise WdbError("Cannot execute Global database query; UNIQUE constraint failed: agent.id")
    await ctx.committed()
    return "ok"


async def delete_agent(ctx: Context, argument: str) -> Reply:
    agent_id = atoi(argument)
    if agent_id == schema.MANAGER_ID:
        raise WdbError("Error deleting agent from agent table in global.db.")
    ctx.store.remove_agents([agent_id], ctx.clock())
    await ctx.committed()
    return "ok"


COMMANDS = {
    "get-agent-info": Command(get_agent_info),
    "get-all-agents": Command(get_all_agents),
    "get-agents-by-connection-status": Command(get_agents_by_connection_status),
    "insert-agent": Command(insert_agent),
    "delete-agent": Command(delete_agent),
    "get-labels": Command(get_labels),
    "select-agent-name": Command(select_agent_name),
    "select-agent-group": Command(select_agent_group),
    "find-agent": Command(find_agent),
}
