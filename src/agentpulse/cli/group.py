"""`agentpulse group`: create, delete, list groups; assign and unassign agents; reconnect a whole group.

Everything goes through the running manager's query socket with Wazuh's wazuh-db commands (see `execute`),
so the store stays the only writer of global.db. An agent's groups keep Wazuh's priority order; an agent
left with none goes back to `default`, which cannot be deleted. Names and errors print via `for_terminal`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from agentpulse.cli import group_files
from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.escape import for_terminal

if TYPE_CHECKING:
    from agentpulse.wdb.client import WdbClient

PROG = "agentpulse group"
REQUEST_BUDGET = 60_000  # bytes of set-agent-groups JSON per request, under the 65536-byte frame


class GroupCommandError(Exception):
    pass


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("group", help="manage agent groups through the running manager")
    add_home_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a group")
    create.add_argument("name")
    delete = actions.add_parser("delete", help="delete a group (its agents keep their other groups)")
    delete.add_argument("name")
    listing = actions.add_parser("list", help="list groups with their sizes, or the agents of one group")
    listing.add_argument("name", nargs="?")
    for name, text in (("assign", "add agents to a group"), ("unassign", "take agents out of a group")):
        action = actions.add_parser(name, help=text)
        action.add_argument("name", help="the group")
        action.add_argument("agents", nargs="+", help="agent ids, or ranges such as 1-1000")
    reconnect = actions.add_parser(
        "reconnect", help="tell every connected agent of a group to reconnect (#!-force_reconnect)"
    )
    reconnect.add_argument("name")
    group_files.register(actions)
    parser.set_defaults(handler=run)


def parse_agents(words: list[str]) -> list[int]:
    """`3 7 10-12` -> [3, 7, 10, 11, 12]; order kept, duplicates dropped."""
    ids: dict[int, None] = {}
    for word in words:
        first, sep, last = word.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise GroupCommandError(f"'{word}' is not an agent id or a range such as 1-1000")
        start, end = int(first), int(last) if sep else int(first)
        if end < start:
            raise GroupCommandError(f"'{word}': the range ends before it starts")
        for agent_id in range(start, end + 1):
            ids[agent_id] = None
    return list(ids)


def group_requests(ids: list[int], group: str, mode: str) -> Iterator[str]:
    """set-agent-groups requests, each under REQUEST_BUDGET bytes."""
    items: list[str] = []
    size = 0
    for agent_id in ids:
        item = json.dumps({"id": agent_id, "groups": [group]}, separators=(",", ":"))
        if items and size + len(item) + 1 > REQUEST_BUDGET:
            yield _set_groups(items, mode)
            items, size = [], 0
        items.append(item)
        size += len(item) + 1
    if items:
        yield _set_groups(items, mode)


def _set_groups(items: list[str], mode: str) -> str:
    return f'global set-agent-groups {{"mode":"{mode}","sync_status":"syncreq","data":[{",".join(items)}]}}'


def _exists(client: WdbClient, name: str) -> bool:
    return bool(client.query_json(f"global find-group {name}"))


def _check(answer: str) -> None:
    status, _, payload = answer.partition(" ")
    if status != "ok":
        raise GroupCommandError(payload or answer)


def _members(client: WdbClient, name: str) -> list[int]:
    return [
        int(agent_id) for agent_id in client.query_pages(f"global get-group-agents {name} last_id {{last}}")
    ]


def execute(client: WdbClient, args: argparse.Namespace) -> str:
    """One action as query-socket requests; the text to print. Raises GroupCommandError.

    The commands are Wazuh's (insert-agent-group, delete-group, select-groups, get-group-agents,
    set-agent-groups; plus `remoted force-reconnect`). An agent's groups keep Wazuh's priority order: the
    group it was given first has priority 0, each later one the next number.
    """
    from agentpulse.shared.names import valid_group
    from agentpulse.store.groups import DEFAULT_GROUP

    name = args.name
    if name is not None and not valid_group(name):
        raise GroupCommandError(f"invalid group name '{name}': letters, digits, '_', '-' and '.' only")
    match args.action:
        case "create":
            if _exists(client, name):
                raise GroupCommandError(f"group '{name}' already exists")
            _check(client.query(f"global insert-agent-group {name}"))
            return f"Group '{name}' created.\n"
        case "delete":
            if name == DEFAULT_GROUP:
                raise GroupCommandError("the default group cannot be deleted")
            if not _exists(client, name):
                raise GroupCommandError(f"group '{name}' does not exist")
            _check(client.query(f"global delete-group {name}"))
            return f"Group '{name}' deleted.\n"
        case "list":
            if name is not None:
                if not _exists(client, name):
                    raise GroupCommandError(f"group '{name}' does not exist")
                return "".join(f"{agent_id:03d}\n" for agent_id in _members(client, name))
            groups = [row["name"] for row in client.query_json("global select-groups")]
            return "".join(
                f"{for_terminal(str(group))}: {len(_members(client, group))} agents\n" for group in groups
            )
        case "assign" | "unassign":
            ids = parse_agents(args.agents)
            if not _exists(client, name):
                raise GroupCommandError(
                    f"group '{name}' does not exist: create it with `{PROG} create {name}`"
                )
            mode = "append" if args.action == "assign" else "remove"
            for request in group_requests(ids, name, mode):
                answer = client.query(request)
                if not answer.startswith("ok"):
                    raise GroupCommandError(
                        f"{answer.partition(' ')[2] or answer} (is every agent of {' '.join(args.agents)} "
                        "registered?)"
                    )
            verb = "added to" if mode == "append" else "removed from"
            return f"{len(ids)} agents {verb} group '{name}'.\n"
        case "reconnect":
            result = client.query_json(f"remoted force-reconnect {name}")
            return (
                f"Group '{name}': {result['members']} agents, {result['sent']} connected ones told to "
                "reconnect.\n"
            )
    raise GroupCommandError(f"unknown action {args.action}")  # pragma: no cover - argparse refuses it


def run(args: argparse.Namespace) -> int:
    from agentpulse.shared.names import valid_group
    from agentpulse.wdb.client import WdbClient, WdbUnavailable
    from agentpulse.wdb.protocol import WdbError

    home = resolve_home(args)
    try:
        with WdbClient(home.wdb_socket) as client:
            if args.action in group_files.ACTIONS:
                name = getattr(args, "name", None)
                if name is not None and not valid_group(name):
                    raise GroupCommandError(
                        f"invalid group name '{name}': letters, digits, '_', '-' and '.' only"
                    )
                return group_files.execute(client, args)
            sys.stdout.write(execute(client, args))
    except WdbUnavailable:
        print(
            f"{PROG}: no manager is running on {home.root} (nothing answers on {home.wdb_socket}); "
            "groups are changed through it: start it with `agentpulse start`",
            file=sys.stderr,
        )
        return 2
    except (GroupCommandError, WdbError, OSError, ConnectionError) as error:
        print(f"{PROG}: {for_terminal(str(error))}", file=sys.stderr)
        return 1
    return 0
