"""The fleet's keys: the first N active agents of a client.keys, or N new `sim-NNNNNN` agents added to it.

Blocking file I/O, called before any loop runs, through `agentpulse.keysfile` like every other reader and
writer of client.keys. The danger is the manager reading the file while it is written: the writer
replaces it atomically, and the lines already there are written back byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from agentpulse.keysfile import KeysRead, read_keys_file, write_keys_file
from agentpulse.simulator.plan import SimulatorError
from agentpulse.wire.keys import ANY_IP, AgentKey

NAME_PREFIX: Final = "sim-"


def load_keys(path: Path, count: int) -> list[AgentKey]:
    """The first `count` active agents of a client.keys."""
    try:
        keys = read_keys_file(path)
    except OSError as error:
        raise SimulatorError(f"{path}: cannot read: {error.strerror or error}") from None
    chosen: list[AgentKey] = []
    for entry in keys.active():
        if len(chosen) == count:
            break
        chosen.append(entry)
    if len(chosen) < count:
        raise SimulatorError(f"{path}: {len(chosen)} active agents, {count} asked for")
    return chosen


def create_keys(path: Path, count: int) -> list[AgentKey]:
    """Append `count` agents (`sim-NNNNNN`, ip any) to a client.keys (created when missing), atomically.

    Numbering continues after the highest `sim-` name already there, so a second run adds new agents.
    """
    try:
        keys = read_keys_file(path, mode=KeysRead.EDIT, missing_ok=True)
    except OSError as error:
        raise SimulatorError(f"{path}: cannot read: {error.strerror or error}") from None
    first = 1 + max(
        (
            int(entry.name[len(NAME_PREFIX) :])
            for entry in keys.entries
            if entry.name.startswith(NAME_PREFIX) and entry.name[len(NAME_PREFIX) :].isdigit()
        ),
        default=0,
    )
    added = keys.add_many((f"{NAME_PREFIX}{first + n:06d}" for n in range(count)), ANY_IP)
    try:
        write_keys_file(path, keys)
    except OSError as error:
        raise SimulatorError(f"{path}: cannot write: {error.strerror or error}") from None
    return added
