"""`agentpulse wdb '<query>'`: send one wazuh-db query to the running manager and print its answer.

The answer is printed as the socket gives it (`ok [...]`, `due [...]`, `err ...`); `--pretty` indents the
JSON payload under its status word. Exit codes: 0 for `ok` and `due`, 1 for any other answer, 2 when no
manager answers on the home's `queue/db/wdb`. Answers hold agent text: control characters are printed as
`\\uXXXX` (`json_safe`), the same value to a JSON reader and nothing a terminal acts on.
"""

from __future__ import annotations

import argparse
import json
import sys

from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.escape import json_safe

NO_MANAGER = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "wdb", help="send one wazuh-db query to the manager's queue/db/wdb socket and print the answer"
    )
    parser.add_argument("query", help="e.g. 'global get-agent-info 1' or 'global get-all-agents last_id 0'")
    add_home_option(parser)
    parser.add_argument("--pretty", action="store_true", help="indent the JSON payload")
    parser.set_defaults(handler=run)


def render(answer: str, pretty: bool) -> str:
    if not pretty:
        return json_safe(answer)
    status, _, payload = answer.partition(" ")
    try:
        decoded = json.loads(payload)
    except ValueError:
        return json_safe(answer)
    # Line by line: the indentation's newlines are ours, json.dumps escaped those inside strings.
    lines = [status, *json.dumps(decoded, indent=2, ensure_ascii=False).split("\n")]
    return "\n".join(json_safe(line) for line in lines)


def run(args: argparse.Namespace) -> int:
    from agentpulse.wdb.client import WdbClient, WdbUnavailable
    from agentpulse.wdb.protocol import OS_MAXSTR

    home = resolve_home(args)
    if len(args.query.encode()) > OS_MAXSTR:
        print(f"agentpulse wdb: a query holds at most {OS_MAXSTR} bytes", file=sys.stderr)
        return 1
    try:
        with WdbClient(home.wdb_socket) as client:
            answer = client.query(args.query)
    except WdbUnavailable:
        print(
            f"agentpulse wdb: no manager answers on {home.wdb_socket}: is `agentpulse start` running "
            "on this home?",
            file=sys.stderr,
        )
        return NO_MANAGER
    except (OSError, ConnectionError) as error:
        print(f"agentpulse wdb: {error}", file=sys.stderr)
        return 1
    print(render(answer, args.pretty))
    return 0 if answer.split(" ", 1)[0] in ("ok", "due") else 1
