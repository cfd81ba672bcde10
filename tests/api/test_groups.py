"""PUT and DELETE /agents/group in-process, on a real store (a SQLite global.db in tmp_path): every refusal of
Wazuh's (1701 unknown, 1703 the manager, 1751 already a member, 1737 too many groups, 1734 not a member,
1745 only in default), the writes of what is accepted, and the failures left out when no agent is named."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentpulse.api import groups
from agentpulse.api.context import ApiContext, ManagerLink
from agentpulse.api.http import Request
from agentpulse.store.batch import GroupChange, GroupChangeKind, GroupMode, InsertedAgent
from agentpulse.store.facade import Store

FULL = [f"g{n:03d}" for n in range(groups.MAX_GROUPS)]  # agent 3's groups: as many as an agent may have


def _unused(*_: object) -> Any:
    raise AssertionError("the group endpoints ask nothing of the manager")


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ApiContext]:
    store = Store(tmp_path / "db", manager_host="manager", node_name="node01")
    store.open([])
    for agent_id in (1, 2, 3):
        assert store.insert_agent(
            InsertedAgent(agent_id, f"agent-{agent_id}", None, "any", "k", ("default",), 1)
        )
    store.change_groups(
        [GroupChange(GroupChangeKind.CREATE, (name,)) for name in ("web", *FULL)]
        + [GroupChange(GroupChangeKind.SET, ("web",), 2, GroupMode.APPEND)]
        + [GroupChange(GroupChangeKind.SET, tuple(FULL), 3, GroupMode.OVERRIDE)]
    )
    store.committed().result(10)
    context = ApiContext(store, ManagerLink(_unused, _unused, _unused), tmp_path / "shared")
    context.open()
    yield context
    context.close()
    context.reader.close()
    store.close()


def _call(ctx: ApiContext, method: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    handler = groups.assign if method == "PUT" else groups.unassign
    request = Request(method, "/agents/group", params, {}, b"", "127.0.0.1")
    response = asyncio.run(asyncio.wait_for(handler(ctx, request), 30))
    assert response.status == 200
    document: dict[str, Any] = json.loads(response.body)
    return document


def _failed(document: dict[str, Any]) -> dict[int, list[str]]:
    return {f["error"]["code"]: f["id"] for f in document["data"]["failed_items"]}


def _groups(ctx: ApiContext, agent_id: int) -> list[str]:
    return ctx.reader.agent_groups(agent_id)


def test_assign_refuses_the_manager_unknown_members_and_full_agents(ctx: ApiContext) -> None:
    reply = _call(ctx, "PUT", [("group_id", "web"), ("agents_list", "000,001,002,003,099")])
    assert reply["data"]["affected_items"] == ["001"]
    assert _failed(reply) == {1701: ["099"], 1703: ["000"], 1737: ["003"], 1751: ["002"]}
    assert reply["error"] == 2 and reply["message"] == "Some agents were not assigned to web"
    assert _groups(ctx, 1) == ["default", "web"]
    assert _groups(ctx, 3) == FULL


def test_forced_assign_replaces_the_groups_even_of_a_member_or_a_full_agent(ctx: ApiContext) -> None:
    params = [("group_id", "web"), ("agents_list", "002,003"), ("force_single_group", "true")]
    reply = _call(ctx, "PUT", params)
    assert reply["data"]["affected_items"] == ["002", "003"] and _failed(reply) == {}
    assert reply["message"] == "All selected agents were assigned to web and removed from the other groups"
    assert _groups(ctx, 2) == ["web"] and _groups(ctx, 3) == ["web"]


def test_assign_without_a_list_takes_every_agent_and_leaves_out_the_manager(ctx: ApiContext) -> None:
    reply = _call(ctx, "PUT", [("group_id", "web")])
    assert reply["data"]["affected_items"] == ["001"]
    assert _failed(reply) == {1737: ["003"], 1751: ["002"]}  # no 1703 for agent 000


def test_unassign_refuses_non_members_and_an_agent_only_in_default(ctx: ApiContext) -> None:
    reply = _call(ctx, "DELETE", [("group_id", "web"), ("agents_list", "000,001,002,099")])
    assert reply["data"]["affected_items"] == ["002"]
    assert _failed(reply) == {1701: ["099"], 1703: ["000"], 1734: ["001"]}
    assert _groups(ctx, 2) == ["default"]
    only_default = _call(ctx, "DELETE", [("group_id", "default"), ("agents_list", "001")])
    assert only_default["data"]["affected_items"] == [] and _failed(only_default) == {1745: ["001"]}
    assert only_default["message"] == "No agent was removed from any group"
    assert _groups(ctx, 1) == ["default"]


def test_unassign_without_a_list_reports_no_non_member(ctx: ApiContext) -> None:
    reply = _call(ctx, "DELETE", [("group_id", "web")])
    assert reply["data"]["affected_items"] == ["002"] and _failed(reply) == {}
    assert reply["message"] == "All selected agents were removed from group web"
