"""`agent_control`: list agents and show one agent, byte for byte as Wazuh 4.x prints it.

Operators and their scripts parse this output, so every space, blank line and missing trailing newline is
part of the contract. The formatting functions are pure (rows in, text out); `main()` does the reading:
agents from client.keys, statuses from global.db opened read-only (see `list_agents` and `status_words`).
Agent text goes out through `for_terminal` (text, CSV) and `json_safe` (JSON): no control character from an
agent reaches the operator's terminal.
"""

from __future__ import annotations

import enum
import getopt
import json
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentpulse import __version__
from agentpulse.cli.database import open_database
from agentpulse.cli.home import HOME_HELP, resolve_home
from agentpulse.config.xmltree import ConfigError
from agentpulse.escape import for_terminal, json_safe
from agentpulse.keysfile import read_keys_file
from agentpulse.paths import Home
from agentpulse.status import ConnectionStatus
from agentpulse.store.reader import Reader, ReadFailed
from agentpulse.store.sqlite.schema import MANAGER_IP
from agentpulse.wire.keys import AgentKey, KeysFile

PROG = "agent_control"
TITLE = "Wazuh agent_control"  # scripts match on this banner, so it keeps Wazuh's name
SERVER_ID = "000"
UNKNOWN_STATUS = "Unknown"
NULL_TEXT = "(null)"  # what glibc's printf prints for a NULL %s
UNKNOWN_TIME = "Unknown"
SCAN_IN_PROGRESS = " (Scan in progress)"
OPTIONS = "VhdlLcsjarmu:i:b:f:Rng:"  # Wazuh's getopt string plus our -g
LONG_OPTIONS = ("home=",)

HELP = f"""
Wazuh {PROG}: Control remote agents.
Available options:
\t-h                This help message.
\t-l                List available (active or not) agents.
\t-lc               List active agents only.
\t-ln               List disconnected agents only.
\t-i <id>           Extracts information from an agent.
\t-R -a             Restart all agents.
\t-R -u <id>        Restart the specified agent.
\t-r -a             Runs the integrity/rootkit checking on all agents now.
\t-r -u <id>        Runs the integrity/rootkit checking on one agent now.

\t-s                Changes the output to CSV (comma delimited).
\t-j                Changes the output to JSON .
Available options for active response:
\t-b <ip>           Blocks the specified ip address.
\t-f <ar> -a        Used with -b, specifies which response to run. Apply AR on all agents.
\t-f <ar> -u <id>   Used with -b, specifies which response to run. Apply AR on specified agent.
\t-L                List available active responses.
Available options (agentpulse):
\t-l -g <group>     List only the agents that belong to <group>.
\t--home <dir>      {HOME_HELP[0].upper()}{HOME_HELP[1:]}.
\t-V                Version.
"""


class Output(enum.Enum):
    TEXT = "text"
    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ListedAgent:
    """One line of `agent_control -l`: the client.keys fields as written and the status words."""

    id: str
    name: str
    ip: str
    status: str


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What `agent_control -i` shows. None stands for a NULL column (or no row at all)."""

    id: str
    name: str
    ip: str
    status: str
    local: bool = False
    os: str | None = None
    version: str | None = None
    config_sum: str | None = None
    merged_sum: str | None = None
    last_keepalive: int | None = None
    syscheck_start: int | None = None
    syscheck_end: int | None = None


@dataclass(frozen=True, slots=True)
class Options:
    list_agents: bool = False
    active_only: bool = False
    disconnected_only: bool = False
    output: Output = Output.TEXT
    agent_id: str | None = None
    info: bool = False
    group: str | None = None
    home: str | None = None
    list_responses: bool = False
    remoted_action: bool = False  # -R, -r, -b/-f: they need remoted's active-response queue


# The flags without a value, and what each sets. -R, -r, -b and -f need remoted's active-response queue.
SWITCHES: dict[str, Callable[[Options], Options]] = {
    "-l": lambda options: replace(options, list_agents=True),
    "-c": lambda options: replace(options, active_only=True),
    "-n": lambda options: replace(options, disconnected_only=True),
    "-s": lambda options: replace(options, output=Output.CSV),
    "-j": lambda options: replace(options, output=Output.JSON),
    "-L": lambda options: replace(options, list_responses=True),
    **{flag: lambda options: replace(options, remoted_action=True) for flag in ("-R", "-r", "-b", "-f")},
}


class UsageError(Exception):
    """Bad command line: print the message and the help text, exit 1."""


# ---- pure formatting ---------------------------------------------------------------------------------


def _json(value: object) -> str:
    # cJSON_PrintUnformatted: no spaces, UTF-8 kept as is, control characters escaped (json_safe adds DEL,
    # C1, bidi controls and lone surrogates, which json.dumps leaves raw).
    return json_safe(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def status_words(connection_status: str | None) -> str:
    """The word print_agent_status() prints; no row means the agent never connected.

    Where Wazuh would print "Unknown" because wazuh-db is down or has not yet copied an agent from
    client.keys, we print "Never connected": global.db is created at manager start, so a missing database
    or row means exactly that.
    """
    if connection_status is None:
        return ConnectionStatus.NEVER_CONNECTED.words
    try:
        return ConnectionStatus(connection_status).words
    except ValueError:
        return UNKNOWN_STATUS


def format_list(
    host: str,
    agents: Sequence[ListedAgent],
    output: Output,
    *,
    show_server: bool = True,
    agentless_section: bool = True,
) -> str:
    """`agent_control -l` in text, CSV or JSON.

    `show_server` is False with -n; `agentless_section` is False with -c (and when client.keys is missing,
    where Wazuh returns before reaching it). We have no agentless devices, so the section is its header only.
    """
    if output is Output.JSON:
        data = [{"id": SERVER_ID, "name": host, "ip": MANAGER_IP, "status": "Active"}] if show_server else []
        data += [{"id": a.id, "name": a.name, "ip": a.ip, "status": a.status} for a in agents]
        return _json({"error": 0, "data": data})
    host = for_terminal(host)
    agents = [ListedAgent(*map(for_terminal, (a.id, a.name, a.ip, a.status))) for a in agents]
    parts: list[str] = []
    if output is Output.CSV:
        if show_server:
            parts.append(f"{SERVER_ID},{host} (server),{MANAGER_IP},Active/Local,\n")
        parts += [f"{a.id},{a.name},{a.ip},{a.status},\n" for a in agents]
    else:
        parts.append(f"\n{TITLE}. List of available agents:")
        if show_server:
            parts.append(f"\n   ID: {SERVER_ID}, Name: {host} (server), IP: {MANAGER_IP}, Active/Local\n")
        else:
            parts.append("\n")
        parts += [f"   ID: {a.id}, Name: {a.name}, IP: {a.ip}, {a.status}\n" for a in agents]
        if agentless_section:
            parts.append("\nList of agentless devices:\n")
    parts.append("\n")
    return "".join(parts)


def ctime(epoch: int) -> str:
    """C's ctime(): local time as `Mon Nov  9 13:00:55 2020`, here without its trailing newline."""
    return time.ctime(epoch)


def syscheck_times(start: int | None, end: int | None) -> tuple[str, str]:
    """The two Syscheck values from scan_info `fim`. The end keeps ctime()'s newline, as Wazuh prints it."""
    start = start or 0
    end = end or 0
    if start <= 0:
        started = UNKNOWN_TIME
    elif start > end:
        started = ctime(start) + SCAN_IN_PROGRESS
    else:
        started = ctime(start)
    ended = UNKNOWN_TIME if end <= 0 else ctime(end) + "\n"
    return started, ended


def _text(value: str | int | None) -> str:
    return NULL_TEXT if value is None else for_terminal(str(value))


def format_info(info: AgentInfo, output: Output) -> str:
    """`agent_control -i <id>` in text, CSV or JSON. The manager's record has `local=True`."""
    agent_id, name, ip = info.id, info.name, info.ip
    status = f"{info.status}/Local" if info.local else info.status
    started, ended = syscheck_times(info.syscheck_start, info.syscheck_end)
    keepalive = None if info.last_keepalive is None else str(info.last_keepalive)
    if output is Output.JSON:
        fields: dict[str, str | None] = {
            "id": agent_id,
            "name": name,
            "ip": ip,
            "status": info.status,
            "os": info.os,
            "version": info.version,
            "configSum": info.config_sum,
            "mergedSum": info.merged_sum,
            "lastKeepAlive": keepalive,
            "syscheckTime": started,
            "syscheckEndTime": ended,
        }
        # cJSON_AddStringToObject() with a NULL string adds nothing.
        data = {key: value for key, value in fields.items() if value is not None}
        return _json({"error": 0, "data": data})
    agent_id, name, ip, status = (for_terminal(text) for text in (agent_id, name, ip, status))
    if output is Output.CSV:
        return (
            f"{agent_id},{name},{ip},{status},"
            f"{_text(info.os)},{_text(info.version)},{_text(keepalive)},{started},\n"
        )
    local = " (local instance)" if info.local else ""
    return (
        f"\n{TITLE}. Agent information:"
        f"\n   Agent ID:   {agent_id}{local}\n"
        f"   Agent Name: {name}\n"
        f"   IP address: {ip}\n"
        f"   Status:     {status}\n\n"
        f"   Operating system:    {_text(info.os)}\n"
        f"   Client version:      {_text(info.version)}\n"
        f"   Configuration hash:  {_text(info.config_sum)}\n"
        f"   Shared file hash:    {_text(info.merged_sum)}\n"
        f"   Last keep alive:     {_text(keepalive)}\n\n"
        f"   Syscheck last started at:  {started}\n"
        f"   Syscheck last ended at:    {ended}\n"
    )


def format_invalid_id(agent_id: str, output: Output) -> str:
    if output is Output.JSON:
        return _json({"error": 40, "message": "Invalid agent id"})
    return f"\n** Invalid agent id '{for_terminal(agent_id)}'.\n" + HELP


def format_remoted_unreachable(output: Output) -> str:
    if output is Output.JSON:
        return _json({"error": 41, "message": "Unable to connect to remoted"})
    return "\n** Unable to connect to remoted.\n"


def format_version() -> str:
    return f"\nagentpulse v{__version__} - {PROG} (Wazuh 4.x compatible)\n\n"


# ---- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Options | str:
    """Options, or the text to print and exit with (-h, -V). Raises UsageError for a bad command line.

    GNU getopt, as Wazuh's glibc build uses: `-lc` is `-l -c`, and options may follow operands.
    """
    try:
        pairs, _operands = getopt.gnu_getopt(list(argv), OPTIONS, list(LONG_OPTIONS))
    except getopt.GetoptError as exc:
        raise UsageError(f"{PROG}: {exc.msg}") from None
    options = Options()
    for flag, value in pairs:
        match flag:
            case "-V":
                return format_version()
            case "-h":
                raise UsageError("")
            case "-i":
                options = replace(options, info=True, agent_id=value)
            case "-u":
                options = replace(options, agent_id=value)
            case "-g":
                options = replace(options, group=value)
            case "--home":
                options = replace(options, home=value)
            case _ if flag in SWITCHES:
                options = SWITCHES[flag](options)
            # -d (debug), -a (all) and -m (agent limit) change nothing we print.
    return options


# ---- reading (I/O) -----------------------------------------------------------------------------------


def _read_keys(home: Home) -> KeysFile | None:
    try:
        return read_keys_file(home.client_keys)
    except FileNotFoundError:
        return None


def read_statuses(reader: Reader) -> dict[int, str]:
    """agent id -> connection_status; empty when the manager never created the database."""
    return reader.statuses() if reader.exists() else {}


def read_group_members(reader: Reader, group: str) -> set[int]:
    return set(reader.group_members(group) or ()) if reader.exists() else set()


def _agent_row(reader: Reader, number: int) -> dict[str, Any] | None:
    """The agent's row, NULL columns left out."""
    return reader.agent(number) if reader.exists() else None


def _fim_scan(reader: Reader, number: int) -> tuple[int | None, int | None]:
    return reader.fim_scan(number) if reader.exists() else (None, None)


def list_agents(
    keys: Iterable[AgentKey], statuses: dict[int, str], options: Options, members: set[int] | None
) -> list[ListedAgent]:
    """The agents to print, in client.keys order, after the -c / -n / -g filters.

    Ids are as written in client.keys, removed entries skipped; each status comes from global.db, opened
    read-only so this works while a manager runs and after it stops.
    """
    listed = []
    for key in keys:
        if members is not None and key.number not in members:
            continue
        status = status_words(statuses.get(key.number))
        if options.active_only and status != ConnectionStatus.ACTIVE.words:
            continue
        if options.disconnected_only and status != ConnectionStatus.DISCONNECTED.words:
            continue
        listed.append(ListedAgent(key.id, key.name, key.ip.text, status))
    return listed


def read_info(reader: Reader, key: AgentKey | None, host: str) -> AgentInfo:
    """The -i record for an agent from client.keys, or for the manager when `key` is None."""
    number = 0 if key is None else key.number
    row = _agent_row(reader, number)
    start, end = _fim_scan(reader, number)
    if key is None:
        # The manager's row is always active; without a database the manager has simply not started yet.
        status = status_words(row.get("connection_status")) if row is not None else "Active"
        info = AgentInfo(SERVER_ID, host, MANAGER_IP, status, local=True)
    else:
        status = status_words(row.get("connection_status") if row is not None else None)
        info = AgentInfo(key.id, key.name, key.ip.lookup_text, status)
    info = replace(info, syscheck_start=start, syscheck_end=end)
    if row is None:
        return info
    return replace(
        info,
        os=row.get("os_uname"),
        version=row.get("version"),
        config_sum=row.get("config_sum"),
        merged_sum=row.get("merged_sum"),
        last_keepalive=row.get("last_keepalive"),
    )


def run(options: Options, home: Home, host: str) -> tuple[str, int]:
    """The text to print and the exit status, in Wazuh's order of precedence."""
    reader = open_database(home).reader
    try:
        return _run(options, home, reader, host)
    finally:
        reader.close()


def _run(options: Options, home: Home, reader: Reader, host: str) -> tuple[str, int]:
    if options.list_responses:
        return "\n   No active response available.\n\n", 0  # agentpulse runs no active responses
    keys = _read_keys(home)
    active = list(keys.active()) if keys is not None else []
    if options.list_agents:
        members = None if options.group is None else read_group_members(reader, options.group)
        agents = list_agents(active, read_statuses(reader), options, members)
        text = format_list(
            host,
            agents,
            options.output,
            show_server=not options.disconnected_only,
            agentless_section=not options.active_only and keys is not None,
        )
        return text, 0
    key: AgentKey | None = None
    if options.agent_id is not None and options.agent_id != SERVER_ID:
        # Wazuh looks the id up as a string: `-i 1` does not find `001`.
        key = next((entry for entry in active if entry.id == options.agent_id), None)
        if key is None:
            invalid = format_invalid_id(options.agent_id, options.output)
            return invalid, 0 if options.output is Output.JSON else 1
    if options.info:
        return format_info(read_info(reader, key, host), options.output), 0
    if options.remoted_action:
        return format_remoted_unreachable(options.output), 1
    return "\n** Invalid argument combination.\n" + HELP, 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stdout.write(HELP)
        return 1
    try:
        parsed = parse_args(args)
    except UsageError as exc:
        if str(exc):
            sys.stderr.write(f"{exc}\n")
        sys.stdout.write(HELP)
        return 1
    if isinstance(parsed, str):
        sys.stdout.write(parsed)
        return 0
    home = resolve_home(parsed)
    try:
        text, status = run(parsed, home, socket.gethostname())
    except (ReadFailed, ConfigError, OSError) as exc:
        sys.stderr.write(f"{PROG}: cannot read the manager home {home.root}: {exc}\n")
        return 1
    sys.stdout.write(text)
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
