"""Upkeep commands: `global vacuum`, `global get_fragmentation`, and the `agent <id>` actor's `vacuum` and
`get_fragmentation` on a per-agent database.

A vacuum needs the write connection with no transaction open, so it is a store job on the writer thread;
the measures are reads on the read pool. Neither runs on the event loop.
"""

from __future__ import annotations

import asyncio
import re

from agentpulse.records import MANAGER_ID
from agentpulse.wdb.commands.context import Command, Context
from agentpulse.wdb.protocol import Reply, dumps, near

AGENT_COMMANDS = ("vacuum", "get_fragmentation")


async def vacuum(ctx: Context, argument: str) -> Reply:
    after = await asyncio.wrap_future(ctx.store.vacuum())
    return "ok " + dumps({"fragmentation_after_vacuum": after})


async def get_fragmentation(ctx: Context, argument: str) -> Reply:
    state = await ctx.read(ctx.reader.fragmentation)
    return "ok " + dumps(state.as_json())


async def agent(ctx: Context, rest: str) -> Reply:
    """The `agent <id> <command>` actor: upkeep of one per-agent database."""
    id_text, sep, query = rest.partition(" ")
    if not sep:
        return f"err Invalid DB query syntax, near '{near(id_text)}'"
    if not re.fullmatch(r"[+-]?[0-9]{1,10}", id_text):  # int() of 4,300+ digits raises
        return f"err Invalid agent ID '{near(id_text)}'"
    agent_id = int(id_text)
    if agent_id != MANAGER_ID and not ctx.known(agent_id):
        return "err Agent not found"
    command = query.partition(" ")[0]
    if command not in AGENT_COMMANDS:
        return f"err Invalid DB query syntax, near '{near(command)}'"
    if not await ctx.read(lambda: ctx.reader.has_agent_db(agent_id)):
        return f"err Couldn't open DB for agent {agent_id}"
    if command == "vacuum":
        after = await asyncio.wrap_future(ctx.store.vacuum(agent_id))
        return "ok " + dumps({"fragmentation_after_vacuum": after})
    state = await ctx.read(lambda: ctx.reader.fragmentation(agent_id))
    return "ok " + dumps(state.as_json())


COMMANDS = {
    "vacuum": Command(vacuum, needs_argument=False),
    "get_fragmentation": Command(get_fragmentation, needs_argument=False),
}
