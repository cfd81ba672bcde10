"""The `remoted` actor: agentpulse's commands to the connection side of the manager.

- `remoted force-reconnect <group>`: every connected member of the group is told to reconnect (`groups`).
- `remoted shared-reload`, `shared-files <group>`, `shared-push <group>`, `shared-status <group>`: the
  groups' shared files (`shared.py`).
- `remoted reload-keys [force]`: read client.keys now and apply it if the reload guard accepts it
  (`remoted/keyguard.py`); `force` accepts one that removes more agents than the limits allow, never one
  with invalid lines. The answer is `ok <JSON of the decision>`, accepted or not (`accepted` says which).
"""

from __future__ import annotations

from agentpulse.wdb.commands.context import Context
from agentpulse.wdb.commands.groups import force_reconnect
from agentpulse.wdb.commands.shared import SHARED_COMMANDS
from agentpulse.wdb.protocol import Reply, dumps, near

FORCE = "force"


async def reload_keys(ctx: Context, argument: str) -> Reply:
    words = argument.split()
    if words not in ([], [FORCE]):
        return f"err Invalid DB query syntax, near '{near(argument.strip())}'"
    if ctx.reload_keys is None:
        return "err client.keys reloads are not served here"
    decision = await ctx.reload_keys(bool(words))
    return "ok " + dumps(decision.as_dict())


async def remoted(ctx: Context, rest: str) -> Reply:
    command, _, argument = rest.partition(" ")
    if command == "force-reconnect":
        return await force_reconnect(ctx, argument)
    if command == "reload-keys":
        return await reload_keys(ctx, argument)
    if command in SHARED_COMMANDS:
        return await SHARED_COMMANDS[command](ctx, argument)
    return f"err Invalid DB query syntax, near '{near(command)}'"
