"""`agentpulse keys reload [--force]`: ask the running manager to reload client.keys now, and say what it
decided (the query socket's `remoted reload-keys [force]`; SIGHUP does the same, without an answer).

`--force` accepts a file that removes more agents at once than `<keys_reload_max_removed>` or
`<keys_reload_max_removed_percent>` allow; a file with an invalid line is never accepted. Exit codes: 0
accepted, 1 refused (or an error), 2 when no manager answers on the home's `queue/db/wdb`.
"""

from __future__ import annotations

import argparse
import sys

from agentpulse.cli.home import add_home_option, resolve_home

NO_MANAGER = 2
# A reload of a big file (parsing, every worker confirming) can take a while: wait longer than a query.
RELOAD_TIMEOUT = 120.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="client.keys on the running manager")
    commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    reload = commands.add_parser(
        "reload", help="reload client.keys now (refused when a line is invalid or too many agents go)"
    )
    add_home_option(reload)
    reload.add_argument(
        "--force",
        action="store_true",
        help="accept a reload that removes more agents than the limits allow (invalid lines: never)",
    )
    reload.set_defaults(handler=run_reload)


def run_reload(args: argparse.Namespace) -> int:
    from agentpulse.wdb.client import WdbClient, WdbUnavailable
    from agentpulse.wdb.protocol import WdbError

    home = resolve_home(args)
    query = "remoted reload-keys force" if args.force else "remoted reload-keys"
    try:
        with WdbClient(home.wdb_socket, timeout=RELOAD_TIMEOUT) as client:
            decision = client.query_json(query)
    except WdbUnavailable:
        print(
            f"agentpulse keys reload: no manager answers on {home.wdb_socket}: is `agentpulse start` "
            "running on this home?",
            file=sys.stderr,
        )
        return NO_MANAGER
    except (OSError, ConnectionError, WdbError, ValueError) as error:
        print(f"agentpulse keys reload: {error}", file=sys.stderr)
        return 1
    if not isinstance(decision, dict) or not isinstance(decision.get("message"), str):
        print(f"agentpulse keys reload: unexpected answer {decision!r}", file=sys.stderr)
        return 1
    accepted = decision.get("accepted") is True
    print(f"client.keys reload {decision['message']}")
    problems = decision.get("problems")
    if not accepted and isinstance(problems, list) and len(problems) > 1:
        for problem in problems:
            if isinstance(problem, dict):
                print(f"  line {problem.get('line')}: {problem.get('reason')}")
    return 0 if accepted else 1
