"""`agentpulse status`: how the fleet is doing, at a glance.

Counts per status, per group, and the latest changes, from the home's database (global.db opened read-only,
or PostgreSQL), and the running
manager's counters from its state files (client.keys reloads, agent events, the NATS streams' replicas).
Names print via `for_terminal`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentpulse.cli.database import open_database
from agentpulse.cli.events_status import render_agent_events
from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.cli.streams_status import render_streams
from agentpulse.config.xmltree import ConfigError
from agentpulse.escape import for_terminal
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.reader import Reader, ReadFailed

RECENT = 10
_COLOURS = {
    ConnectionStatus.ACTIVE: "\033[32m",
    ConnectionStatus.PENDING: "\033[33m",
    ConnectionStatus.DISCONNECTED: "\033[31m",
    ConnectionStatus.NEVER_CONNECTED: "\033[90m",
}
_RESET = "\033[0m"


@dataclass(frozen=True, slots=True)
class Change:
    agent_id: int
    name: str
    from_status: ConnectionStatus
    to_status: ConnectionStatus
    code: StatusCode
    at: float


@dataclass(frozen=True, slots=True)
class KeysReloads:
    """The manager's client.keys reload counters, as its state file has them."""

    accepted: int
    refused: int
    last_refused_at: float
    last_refusal: str


@dataclass(frozen=True, slots=True)
class Summary:
    counts: dict[ConnectionStatus, int]
    groups: dict[str, dict[ConnectionStatus, int]]
    recent: list[Change]
    reloads: KeysReloads | None = None
    configs: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> group_config_status -> n


def read_state_file(path: Path) -> dict[str, str]:
    """`name='value'` lines (Wazuh's state file format); nothing when there is no file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip().strip("'")
    return values


def read_reloads(path: Path) -> KeysReloads | None:
    state = read_state_file(path)
    try:
        return KeysReloads(
            int(state["keys_reloads_accepted"]),
            int(state["keys_reloads_refused"]),
            float(state.get("keys_last_refused", "0")),
            state.get("keys_last_refusal", ""),
        )
    except (KeyError, ValueError):
        return None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="counts per status, per group, and the latest changes")
    add_home_option(parser)
    parser.add_argument("--recent", type=int, default=RECENT, help="how many recent changes to show")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    parser.set_defaults(handler=run)


def read_summary(reader: Reader, recent: int, reloads: KeysReloads | None = None) -> Summary:
    counts = dict.fromkeys(ConnectionStatus, 0)
    for status, count in reader.status_counts().items():
        counts[ConnectionStatus(status)] = count
    groups: dict[str, dict[ConnectionStatus, int]] = {}
    for name, by_status in reader.group_status_counts().items():
        group = groups[name] = dict.fromkeys(ConnectionStatus, 0)
        for status, count in by_status.items():
            group[ConnectionStatus(status)] = count
    changes = [
        Change(
            entry.agent_id,
            entry.name or "?",
            ConnectionStatus(entry.from_status),
            ConnectionStatus(entry.to_status),
            StatusCode(entry.status_code),
            entry.at,
        )
        for entry in reader.recent_changes(recent)
    ]
    return Summary(counts, groups, changes, reloads, reader.group_config_counts())


def render(summary: Summary, colour: bool) -> str:
    def paint(status: ConnectionStatus, text: str) -> str:
        return f"{_COLOURS[status]}{text}{_RESET}" if colour else text

    total = sum(summary.counts.values())
    lines = [f"Agents: {total}"]
    for status in ConnectionStatus:
        lines.append(f"  {paint(status, f'{status.words:<16}')} {summary.counts[status]:>8}")
    if summary.groups:
        lines.append("")
        lines.append("Groups:")
        for name, counts in summary.groups.items():
            cells = ", ".join(f"{paint(s, s.words)} {counts[s]}" for s in ConnectionStatus if counts[s])
            lines.append(f"  {for_terminal(name)}: {cells}")
    if summary.configs:
        lines.append("")
        lines.append("Shared files (members that have their group's merged.mg):")
        for name, by_config in summary.configs.items():
            synced, other = by_config.get("synced", 0), by_config.get("not synced", 0)
            lines.append(f"  {for_terminal(name)}: synced {synced}, not synced {other}")
    if summary.reloads is not None:
        reloads = summary.reloads
        lines.append("")
        lines.append(f"client.keys reloads: {reloads.accepted} accepted, {reloads.refused} refused")
        if reloads.refused:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reloads.last_refused_at))
            lines.append(f"  last refused {when}: {for_terminal(reloads.last_refusal)}")
    if summary.recent:
        lines.append("")
        lines.append("Latest changes:")
        for change in summary.recent:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(change.at))
            reason = f" ({change.code.reason})" if change.code else ""
            lines.append(
                f"  {when}  {change.agent_id:03d} {for_terminal(change.name)}: {change.from_status.words} -> "
                f"{paint(change.to_status, change.to_status.words)}{reason}"
            )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    home = resolve_home(args)
    try:
        database = open_database(home)
    except ConfigError as error:
        print(f"agentpulse status: {error}", file=sys.stderr)
        return 1
    try:
        if not database.reader.exists():
            print(
                f"agentpulse status: no database at {database.where}: has the manager run on this home?",
                file=sys.stderr,
            )
            return 1
        summary = read_summary(database.reader, args.recent, read_reloads(home.remoted_state))
    except ReadFailed as error:
        print(f"agentpulse status: cannot read {database.where}: {error}", file=sys.stderr)
        return 1
    finally:
        database.reader.close()
    colour = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    sys.stdout.write(render(summary, colour))
    sys.stdout.write(render_agent_events(home))
    sys.stdout.write(render_streams(home))
    return 0
