"""`agentpulse group files|push|status|reload`: the groups' shared files, through the running manager.

`files <group>` lists what the group's merged.mg is made of (name, size, md5); `push <group>` sends it now
to every connected member; `status <group>` counts members synced, pending and disconnected, and with
`--wait` draws a progress bar until every connected member is synced (or `--timeout`); `reload` rescans
`etc/shared` at once instead of at the next `shared_reload`. Names print via `for_terminal`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from agentpulse.escape import for_terminal

if TYPE_CHECKING:
    from agentpulse.wdb.client import WdbClient

ACTIONS = ("files", "push", "status", "reload")
POLL_INTERVAL = 0.5
BAR_WIDTH = 30


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    files = actions.add_parser("files", help="the files of a group's merged.mg, with their md5")
    files.add_argument("name")
    push = actions.add_parser("push", help="push a group's merged.mg to its connected members now")
    push.add_argument("name")
    status = actions.add_parser("status", help="how many members have the group's files (synced)")
    status.add_argument("name")
    status.add_argument("--wait", action="store_true", help="show progress until all connected are synced")
    status.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits at most")
    status.add_argument("--json", action="store_true", help="one JSON object")
    actions.add_parser("reload", help="rescan etc/shared now (otherwise every <shared_reload> seconds)")


def _status_line(counts: dict[str, Any]) -> str:
    members = int(counts["members"])
    synced = int(counts["synced"])
    connected = synced + int(counts["pending"])
    filled = BAR_WIDTH * synced // connected if connected else BAR_WIDTH
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return (
        f"[{bar}] {synced}/{connected} connected synced, {counts['pending']} pending, "
        f"{counts['disconnected']} disconnected, {counts['pushing']} pushing ({members} members)"
    )


def _done(counts: dict[str, Any]) -> bool:
    return int(counts["pending"]) == 0 and int(counts["pushing"]) == 0


def wait(client: WdbClient, name: str, timeout: float, out: TextIO) -> bool:
    """Redraw the bar until every connected member is synced; False after `timeout`."""
    tty = out.isatty()
    deadline = time.monotonic() + timeout
    while True:
        counts = client.query_json(f"remoted shared-status {name}")
        line = _status_line(counts)
        out.write(f"\r{line}" if tty else line + "\n")
        out.flush()
        if _done(counts):
            if tty:
                out.write("\n")
            return True
        if time.monotonic() >= deadline:
            if tty:
                out.write("\n")
            return False
        time.sleep(POLL_INTERVAL)


def execute(client: WdbClient, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """One action; prints its result and returns the exit code (1 when `--wait` timed out)."""
    name = str(getattr(args, "name", ""))
    if args.action == "reload":
        sums = client.query_json("remoted shared-reload")
        out.write("".join(f"{for_terminal(key)}: {md5}\n" for key, md5 in sums.items()))
        return 0
    if args.action == "files":
        rows = client.query_json(f"remoted shared-files {name}")
        out.write("".join(f"{row['md5']}  {row['size']:>10}  {for_terminal(row['name'])}\n" for row in rows))
        return 0
    if args.action == "push":
        queued = client.query_json(f"remoted shared-push {name}")["queued"]
        out.write(f"Group '{name}': merged.mg pushed to {queued} connected agents.\n")
        return 0
    if args.wait:
        return 0 if wait(client, name, args.timeout, out) else 1
    counts = client.query_json(f"remoted shared-status {name}")
    out.write(json.dumps(counts) + "\n" if args.json else _status_line(counts) + f" md5 {counts['md5']}\n")
    return 0
