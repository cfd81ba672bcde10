"""Cluster sync commands: `sync-agent-info-get` (what the cluster has not had yet, page by page, then marked
synced) and `sync-agent-info-set` (agent rows from the cluster).

A set writes its columns directly but never a status: a connection_status it brings becomes a status-model
event, and one the model cannot produce is refused. The get keeps its last id between calls, like Wazuh's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agentpulse.records import StatusUpdate
from agentpulse.status import ConnectionStatus, Trigger
from agentpulse.store.batch import ColumnUpdate
from agentpulse.store.reader import UnsyncedAgent
from agentpulse.wdb.commands.arguments import invalid_data, json_int, parse_json
from agentpulse.wdb.commands.context import Command, Context
from agentpulse.wdb.commands.status import STATUS_EVENTS, no_transition
from agentpulse.wdb.protocol import INT64_MAX, INT64_MIN, Reply, WdbError, atoi, batched, page

# sync-agent-info-set: what it may write directly; statuses go through the status model.
SYNC_COLUMNS = (
    "name",
    "ip",
    "os_name",
    "os_version",
    "os_major",
    "os_minor",
    "os_codename",
    "os_build",
    "os_platform",
    "os_uname",
    "os_arch",
    "version",
    "config_sum",
    "merged_sum",
    "manager_host",
    "node_name",
    "last_keepalive",
)
SYNCREQ_FIELDS = (*SYNC_COLUMNS, "id", "connection_status", "disconnection_time", "status_code")
# What the cluster gets of an agent whose sync_status says only part of it changed.
PARTIAL_FIELDS = {
    "syncreq_keepalive": ("id", "last_keepalive"),
    "syncreq_status": ("id", "last_keepalive", "connection_status", "disconnection_time", "status_code"),
}
SYNC_BATCH = 256  # agent rows read at a time: rows are wide and a full sync reads labels for each


def storable(value: object) -> bool:
    """What a client may have written into a column: a string, a 64-bit integer, a number, or null."""
    if value is None or isinstance(value, str | float):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def _item(agent: UnsyncedAgent) -> dict[str, Any]:
    row = agent.row
    fields = PARTIAL_FIELDS.get(row.get("sync_status", ""))
    if fields is not None:
        return {k: row[k] for k in fields if k in row}
    item = {k: row[k] for k in SYNCREQ_FIELDS if k in row}
    item["labels"] = agent.labels or []
    return item


async def sync_agent_info_get(ctx: Context, argument: str) -> Reply:
    if argument:
        key, _, value = argument.partition(" ")
        if key == "last_id":
            ctx.sync_last_id = atoi(value)
    after = ctx.sync_last_id

    def items() -> Iterator[dict[str, Any]]:
        rows = batched(ctx.reader.unsynced_agents, after, lambda agent: int(agent.row["id"]), SYNC_BATCH)
        return (_item(agent) for agent in rows)

    status, text, taken = await ctx.read(lambda: page(items()))
    for item in taken:
        ctx.store.set_sync_status(int(item["id"]), "synced")
    ctx.sync_last_id = int(taken[-1]["id"]) if status == "due" and taken else 0
    await ctx.committed()
    return f"{status} {text}"


def _labels(item: dict[str, Any]) -> tuple[tuple[str, str], ...] | None:
    labels = item.get("labels")
    if not isinstance(labels, list):
        return None
    return tuple(
        (str(label["key"]), str(label["value"]))
        for label in labels
        if isinstance(label, dict) and "key" in label and "value" in label
    )


def _event(item: dict[str, Any]) -> Trigger | None:
    """The status-model event for the connection_status an item brings (None: none, or never_connected)."""
    status = item.get("connection_status")
    if not isinstance(status, str):
        return None
    code = json_int(item.get("status_code")) or 0
    event = STATUS_EVENTS.get((status, code))
    if event is None and status != ConnectionStatus.NEVER_CONNECTED.value:
        raise no_transition(status, code)
    return event


def _update(item: object, argument: str) -> tuple[ColumnUpdate, Trigger | None]:
    agent_id = json_int(item.get("id")) if isinstance(item, dict) else None
    if agent_id is None or not isinstance(item, dict):
        raise invalid_data(argument)
    columns = {key: item.get(key) for key in SYNC_COLUMNS}  # missing -> NULL, as Wazuh binds
    if not isinstance(columns["name"], str):
        raise WdbError("Cannot execute Global database query; NOT NULL constraint failed: agent.name")
    if not all(storable(value) for value in columns.values()):
        raise invalid_data(argument)
    labels = _labels(item)
    return ColumnUpdate(agent_id, columns, labels), _event(item)


async def sync_agent_info_set(ctx: Context, argument: str) -> Reply:
    data = parse_json(argument)
    if not isinstance(data, list):
        raise invalid_data(argument)
    updates = [_update(item, argument) for item in data]
    now = ctx.clock()
    for update, event in updates:
        if not ctx.known(update.agent_id):
            continue
        ctx.store.update_columns(update)
        if event is not None:
            ctx.store.submit(StatusUpdate(update.agent_id, event, now))
    await ctx.committed()
    return "ok"


COMMANDS = {
    "sync-agent-info-get": Command(sync_agent_info_get, needs_argument=False),
    "sync-agent-info-set": Command(sync_agent_info_set),
}
