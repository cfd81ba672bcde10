"""`manage_agents`: add, remove, list and extract client.keys entries, with Wazuh's flags and messages.

Non-interactive only. Each run reads client.keys, edits it with `KeysFile` (every line it does not touch
stays byte for byte, comments and removed entries included) and writes it back atomically through
`agentpulse.keysfile`, so remoted's reload never sees half a file. An edit holds `KeysLock` (shared with
enrolment) from its read to its write, so neither loses the other's lines. Flags: see `build_parser`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Sequence

from agentpulse import __version__
from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.escape import for_terminal
from agentpulse.keysfile import KeysLock, KeysRead, read_keys_file, write_keys_file
from agentpulse.paths import Home
from agentpulse.wire.keys import (
    ANY_IP,
    FIELD_MAX,
    AgentKey,
    KeysFile,
    generate_key,
    parse_ip,
    validate_name,
)

PROG = "manage_agents"
BULK_WIDTH = 5  # NAME-00001

# Wazuh's strings (src/addagent/manage_agents.h), kept so scripts that parse them keep working.
PRINT_AVAILABLE = "\nAvailable agents: \n"
PRINT_AGENT = "   ID: {id}, Name: {name}, IP: {ip}\n"
NO_AGENT = "\n** No agent available. You need to add one first.\n"
EXTRACT_MSG = "\nAgent key information for '{id}' is: \n{key}\n"
AGENT_ADD = "Agent added with ID {id}.\n"
REMOVE_DONE = "Agent '{id}' removed.\n"


class ManageError(Exception):
    """A refused request: printed on stderr, exit status 1."""


# ------------------------------------------------------------------------------------------- the edits


def add_agent(keys: KeysFile, name: str, ip: str = ANY_IP, agent_id: str | None = None) -> AgentKey:
    """Add one agent as Wazuh's manage_agents does. Raises ManageError with the reason."""
    if ip.lower() == ANY_IP:
        ip = ANY_IP
    try:
        validate_name(name)
        ip_range = parse_ip(ip)
    except ValueError as exc:
        raise ManageError(str(exc)) from None
    if len(name) > FIELD_MAX:  # longer fields make the whole line unreadable (KEYSIZE buffer)
        raise ManageError(f"invalid agent name {name!r}: at most {FIELD_MAX} characters")
    if ip_range.network is not None:
        for entry in keys.active():
            if entry.ip.text == ip or (
                ip_range.single_host and entry.ip.single_host and entry.ip.lookup_text == ip_range.lookup_text
            ):
                raise ManageError(f"duplicated IP {ip!r}: agent {entry.id} ({entry.name}) already has it")
    if agent_id is not None:
        agent_id = format_id(agent_id)
    try:
        return keys.add(name, ip, agent_id=agent_id)
    except ValueError as exc:
        raise ManageError(str(exc)) from None


def format_id(text: str) -> str:
    """Wazuh's FormatID(): decimal, written `%03d`. 0 is the manager's own id."""
    if not text.isdigit() or int(text) == 0:
        raise ManageError(f"invalid ID {text!r}: a positive decimal number is expected")
    return f"{int(text):03d}"


def bulk_add(keys: KeysFile, count: int, prefix: str) -> tuple[KeysFile, list[AgentKey]]:
    """N agents `<prefix>-00001`… with ip any, in O(N): one new KeysFile instead of N calls to add()."""
    if count < 1:
        raise ManageError(f"--bulk needs a positive count, not {count}")
    names = [f"{prefix}-{number:0{BULK_WIDTH}d}" for number in range(1, count + 1)]
    for name in (names[0], names[-1]):  # same characters throughout; the last one is the longest
        try:
            validate_name(name)
        except ValueError as exc:
            raise ManageError(str(exc)) from None
        if len(name) > FIELD_MAX:
            raise ManageError(f"invalid agent name {name!r}: at most {FIELD_MAX} characters")
    taken = {entry.name for entry in keys.active()}
    clash = next((name for name in names if name in taken), None)
    if clash is not None:
        raise ManageError(f"an agent named {clash!r} already exists")
    first = int(keys.next_id())
    any_ip = parse_ip(ANY_IP)
    new = [
        AgentKey(f"{first + offset:03d}", name, any_ip, generate_key()) for offset, name in enumerate(names)
    ]
    lines = keys.render().split("\n")[:-1] + [entry.line() for entry in new]
    return KeysFile(lines), new


def remove_agent(keys: KeysFile, home: Home, agent_id: str) -> AgentKey:
    """Mark the entry removed (`!` before the name, in place) and delete its `queue/rids/<id>` counter."""
    entry = _find(keys, agent_id)
    removed = keys.remove(entry.id)
    with contextlib.suppress(FileNotFoundError):
        home.rids_file(entry.id).unlink()
    return removed


def extract_key(keys: KeysFile, agent_id: str) -> str:
    """The base64 line an agent imports (`manage_agents -i` on the agent side)."""
    entry = _find(keys, agent_id)
    if entry.key.endswith("\r"):  # a CRLF file: the agent's reader drops the \r as well
        entry = dataclasses.replace(entry, key=entry.key.rstrip("\r"))
    return entry.extract()


def format_list(keys: KeysFile) -> str:
    """`-l`: Wazuh's listing of the active agents."""
    entries = list(keys.active())
    if not entries:
        return NO_AGENT
    # A hand-edited client.keys can hold anything (undecodable bytes arrive as lone surrogates).
    rows = (
        PRINT_AGENT.format(id=for_terminal(e.id), name=for_terminal(e.name), ip=for_terminal(e.ip.text))
        for e in entries
    )
    return PRINT_AVAILABLE + "".join(rows)


def _find(keys: KeysFile, agent_id: str) -> AgentKey:
    entry = keys.by_id(agent_id) if agent_id.isdigit() else None
    if entry is None:
        raise ManageError(f"Invalid ID '{agent_id}' given. ID is not present.")
    return entry


# ------------------------------------------------------------------------------------------ the command


def build_parser() -> argparse.ArgumentParser:
    """Wazuh's flags and ours.

    Wazuh's: `-a <ip|any> -n <name>` add, `-r <id>` remove, `-l` list, `-e <id>` extract. Ours: `-i/--id`
    picks the id of a new agent (Wazuh's `-i` imports a key on an agent, which has no meaning on a
    manager), `--bulk N --prefix NAME` adds N agents for tests and simulations in one write, `--home` picks
    the home.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage the agent keys of client.keys (agentpulse, Wazuh-compatible flags).",
    )
    parser.add_argument("-V", action="version", version=f"agentpulse {PROG} {__version__}")
    parser.add_argument("-l", dest="list", action="store_true", help="list the available agents")
    parser.add_argument(
        "-a", dest="ip", metavar="IP", help="add an agent with this ip ('any', an address or a network)"
    )
    parser.add_argument("-n", dest="name", metavar="NAME", help="name of the agent to add (with -a)")
    parser.add_argument("-i", "--id", dest="agent_id", metavar="ID", help="id of the agent to add (with -a)")
    parser.add_argument("-r", dest="remove", metavar="ID", help="remove an agent")
    parser.add_argument(
        "-e", dest="extract", metavar="ID", help="print an agent's key for import on the agent"
    )
    parser.add_argument("--bulk", type=int, metavar="N", help="add N agents with ip any in one write")
    parser.add_argument("--prefix", metavar="NAME", help="with --bulk: names are NAME-00001, NAME-00002, ...")
    add_home_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    actions = [
        flag
        for flag, given in (
            ("-a/-n", args.ip is not None or args.name is not None),
            ("-r", args.remove is not None),
            ("-l", args.list),
            ("-e", args.extract is not None),
            ("--bulk", args.bulk is not None),
        )
        if given
    ]
    if args.agent_id is not None and (args.ip is None or args.name is None):
        parser.error("-i/--id only chooses the id of an agent added with -a/-n")
    if len(actions) != 1:
        parser.error(
            "give exactly one of -a/-n, -r, -l, -e, --bulk"
            + (f" (got {', '.join(actions)})" if actions else "")
        )
    if actions == ["-a/-n"] and (args.ip is None or args.name is None):
        parser.error("adding an agent needs both -a <ip|any> and -n <name>")
    if (args.bulk is not None) != bool(args.prefix):
        parser.error("--bulk N and --prefix NAME go together")
    home = resolve_home(args)
    try:
        output = _run(args, home)
    except ManageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(output)
    return 0


def _run(args: argparse.Namespace, home: Home) -> str:
    """Read client.keys, do the one action, write the file back when it changed.

    The file is read with `KeysRead.EDIT` (lines split on `\\n` only, so nothing else in an untouched line
    changes) and written with `write_keys_file` (a temporary file, fsync, `os.replace`), so remoted's reload
    (on an mtime or inode change) never sees half a file.
    """
    path = home.client_keys
    if args.list or args.extract is not None:  # reads: the file is replaced whole, never half written
        keys = read_keys_file(path, mode=KeysRead.EDIT, missing_ok=True)
        if args.list:
            return format_list(keys)
        return EXTRACT_MSG.format(id=_find(keys, args.extract).id, key=extract_key(keys, args.extract))
    with KeysLock(path):
        return _edit(args, home, read_keys_file(path, mode=KeysRead.EDIT, missing_ok=True))


def _edit(args: argparse.Namespace, home: Home, keys: KeysFile) -> str:
    path = home.client_keys
    if args.remove is not None:
        removed = remove_agent(keys, home, args.remove)
        write_keys_file(path, keys)
        return REMOVE_DONE.format(id=removed.id)
    if args.bulk is not None:
        keys, new = bulk_add(keys, args.bulk, args.prefix)
        write_keys_file(path, keys)
        return f"{len(new)} agents added, ids {new[0].id} to {new[-1].id}.\n"
    entry = add_agent(keys, args.name, args.ip, args.agent_id)
    write_keys_file(path, keys)
    return AGENT_ADD.format(id=entry.id)


if __name__ == "__main__":
    sys.exit(main())
