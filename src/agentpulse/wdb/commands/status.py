"""Status commands: keep-alives, connection statuses, status codes, disconnecting the silent, resetting all.

None of them writes a status: each becomes a status-model event for the store, as remoted's do (status row,
history row, outbox row in one commit), and is answered once committed. A (status, code) pair the model
cannot produce is refused rather than written.
"""

from __future__ import annotations

from typing import Any

from agentpulse.records import StatusUpdate
from agentpulse.status import LIVE, ConnectionStatus, StatusCode, Trigger
from agentpulse.store.groups import SYNC_STATUSES
from agentpulse.wdb.commands.arguments import invalid_data, json_int, json_object
from agentpulse.wdb.commands.context import Command, Context
from agentpulse.wdb.protocol import Reply, WdbError, atoi, near, page

# update-connection-status: the (status, code) pairs the status model can produce, and the event for each.
STATUS_EVENTS: dict[tuple[str, int], Trigger] = {
    (ConnectionStatus.PENDING.value, StatusCode.NONE): Trigger.STARTUP,
    (ConnectionStatus.ACTIVE.value, StatusCode.NONE): Trigger.ALIVE,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.SHUTDOWN_RECEIVED): Trigger.SHUTDOWN,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.NO_KEEPALIVE): Trigger.TIMEOUT,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.RESET_BY_MANAGER): Trigger.MANAGER_RESET,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.CONNECTION_LOST): Trigger.CONNECTION_LOST,
}
KEEPALIVE_EVENTS = {
    ConnectionStatus.PENDING.value: Trigger.STARTUP,
    ConnectionStatus.ACTIVE.value: Trigger.ALIVE,
}
CHECK_FAILED = "Cannot execute Global database query; CHECK constraint failed: sync_status"


def no_transition(status: str, code: int) -> WdbError:
    return WdbError(
        f"Cannot execute Global database query; the status model has no transition to "
        f"'{near(status)}' with status_code {code}"
    )


def sync_status(value: object, argument: str) -> str:
    if not isinstance(value, str):
        raise invalid_data(argument)
    if value not in SYNC_STATUSES:
        raise WdbError(CHECK_FAILED)
    return value


async def change_status(ctx: Context, update: StatusUpdate, sync: str, *, touch: bool = False) -> None:
    """A status command: the status model (and last_keepalive with `touch`), then sync_status, answered
    once committed. An agent global.db does not know changes nothing."""
    if ctx.known(update.agent_id):
        ctx.store.submit(update)
        if touch:
            ctx.store.touch(update.agent_id, update.at)
        ctx.store.set_sync_status(update.agent_id, sync)
        await ctx.committed()


def _status_argument(argument: str) -> tuple[dict[str, Any], int]:
    """A status command's JSON object and its agent id: invalid data without an integer `id` and a text
    `sync_status` (whose value `sync_status()` checks once the command's own members are checked)."""
    data = json_object(argument)
    agent_id = json_int(data.get("id"))
    if agent_id is None or not isinstance(data.get("sync_status"), str):
        raise invalid_data(argument)
    return data, agent_id


async def update_keepalive(ctx: Context, argument: str) -> Reply:
    data, agent_id = _status_argument(argument)
    status = data.get("connection_status")
    if not isinstance(status, str):
        raise invalid_data(argument)
    sync = sync_status(data["sync_status"], argument)
    event = KEEPALIVE_EVENTS.get(status)
    if event is None:
        raise WdbError(
            f"Cannot execute Global database query; connection_status '{near(status)}' cannot come "
            "with a keep-alive (pending or active)"
        )
    await change_status(ctx, StatusUpdate(agent_id, event, ctx.clock()), sync, touch=True)
    return "ok"


async def update_connection_status(ctx: Context, argument: str) -> Reply:
    data, agent_id = _status_argument(argument)
    code = json_int(data.get("status_code"))
    status = data.get("connection_status")
    if code is None or not isinstance(status, str):
        raise invalid_data(argument)
    sync = sync_status(data["sync_status"], argument)
    event = STATUS_EVENTS.get((status, code))
    if event is None:
        raise no_transition(status, code)
    update = StatusUpdate(agent_id, event, ctx.clock())
    await change_status(ctx, update, sync, touch=event is Trigger.STARTUP)
    return "ok"


async def update_status_code(ctx: Context, argument: str) -> Reply:
    data, agent_id = _status_argument(argument)
    code = json_int(data.get("status_code"))
    version = data.get("version")
    if code is None or not (version is None or isinstance(version, str)):
        raise invalid_data(argument)
    sync = sync_status(data["sync_status"], argument)
    try:
        status_code = StatusCode(code)
    except ValueError:
        raise WdbError(f"Cannot execute Global database query; unknown status_code {code}") from None
    refused = StatusUpdate(agent_id, Trigger.VERSION_REFUSED, ctx.clock(), code=status_code, version=version)
    await change_status(ctx, refused, sync)
    return "ok"


async def disconnect_agents(ctx: Context, argument: str) -> Reply:
    words = argument.split()
    if not words:
        raise WdbError("Invalid arguments last id not found")
    if len(words) < 2:
        raise WdbError("Invalid arguments keepalive not found")
    if len(words) < 3:
        raise WdbError("Invalid arguments sync_status not found")
    last_id, threshold, sync = atoi(words[0]), atoi(words[1]), words[2]
    if sync not in SYNC_STATUSES:
        raise WdbError(CHECK_FAILED)
    agents = ctx.store.agents
    stale = (
        {"id": agent_id}
        for agent_id in sorted(a for a in agents if a > last_id)
        if agents[agent_id].status in LIVE and (agents[agent_id].last_keepalive or 0) < threshold
    )
    status, text, taken = page(stale)
    now = ctx.clock()
    for item in taken:
        ctx.store.submit(StatusUpdate(item["id"], Trigger.TIMEOUT, now))
        ctx.store.set_sync_status(item["id"], sync)
    await ctx.committed()
    return f"{status} {text}"


async def reset_agents_connection(ctx: Context, argument: str) -> Reply:
    sync = argument.strip()
    if sync not in SYNC_STATUSES:
        raise WdbError(CHECK_FAILED)
    live = [agent_id for agent_id, _ in ctx.store.live_agents()]
    ctx.store.reset_connections()
    for agent_id in live:
        ctx.store.set_sync_status(agent_id, sync)
    await ctx.committed()
    return "ok"


COMMANDS = {
    "update-keepalive": Command(update_keepalive),
    "update-connection-status": Command(update_connection_status),
    "update-status-code": Command(update_status_code),
    "disconnect-agents": Command(disconnect_agents),
    "reset-agents-connection": Command(reset_agents_connection),
}
