"""`remoted shared-*`: agentpulse's commands for the groups' shared files (`agentpulse group ...`).

- `shared-reload`: scan `etc/shared` now; `ok {"<group or CSV>":"<merged.mg md5>",...}`.
- `shared-files <group>`: `ok [{"name","size","md5"},...]`, what the group's merged.mg is made of.
- `shared-push <group>`: push the group's merged.mg to every connected member now; `ok {"queued":N}`.
- `shared-status <group>`: `ok {"group","md5","members","synced","pending","disconnected","pushing",...}`.
A group name that could be a path (`..`, `/`, NUL) is refused before anything is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agentpulse.shared.names import BadName, check_group
from agentpulse.wdb.commands.context import Context
from agentpulse.wdb.protocol import Reply, dumps, near

NOT_SERVED = "err shared files are not served here"


def _group(argument: str) -> str:
    name = argument.strip()
    check_group(name)
    return name


async def shared_reload(ctx: Context, argument: str) -> Reply:
    if ctx.shared is None:
        return NOT_SERVED
    return "ok " + dumps(await ctx.shared.reload())


async def shared_files(ctx: Context, argument: str) -> Reply:
    if ctx.shared is None:
        return NOT_SERVED
    group = _group(argument)
    files = await ctx.shared.files(group)
    if files is None:
        return f"err Group '{near(group)}' has no folder"
    return "ok " + dumps([{"name": f.name, "size": f.size, "md5": f.md5} for f in files])


async def shared_push(ctx: Context, argument: str) -> Reply:
    if ctx.shared is None:
        return NOT_SERVED
    return "ok " + dumps({"queued": ctx.shared.push_group(_group(argument))})


async def shared_status(ctx: Context, argument: str) -> Reply:
    if ctx.shared is None:
        return NOT_SERVED
    return "ok " + dumps(ctx.shared.group_status(_group(argument)))


def _refusing(
    handler: Callable[[Context, str], Awaitable[Reply]],
) -> Callable[[Context, str], Awaitable[Reply]]:
    async def run(ctx: Context, argument: str) -> Reply:
        try:
            return await handler(ctx, argument)
        except BadName:
            return "err Invalid group name (letters, digits, '_', '-' and '.' only)"

    return run


SHARED_COMMANDS: dict[str, Callable[[Context, str], Awaitable[Reply]]] = {
    "shared-reload": _refusing(shared_reload),
    "shared-files": _refusing(shared_files),
    "shared-push": _refusing(shared_push),
    "shared-status": _refusing(shared_status),
}
