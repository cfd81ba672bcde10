"""The fleet's keys: the first N active agents of a client.keys, or N new `sim-NNNNNN` agents added to it.

Blocking file I/O, called before any loop runs. The danger is the manager reading client.keys while it is
written: new keys are written to a temporary file whole, then renamed over the old one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

from agentpulse.simulator.plan import SimulatorError
from agentpulse.wire.keys import ANY_IP, AgentKey, KeysFile

NAME_PREFIX: Final = "sim-"


def load_keys(path: Path, count: int) -> list[AgentKey]:
    """The first `count` active agents of a client.keys."""
    try:
        keys = KeysFile.parse(path.read_text(errors="replace"))
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
    """Append `count` agents (`sim-NNNNNN`, ip any) to a client.keys, written whole then renamed over it.

    Numbering continues after the highest `sim-` name already there, so a second run adds new agents.
    """
    try:
        text = path.read_text(errors="replace")
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        text, mode = "", 0o640
    except OSError as error:
        raise SimulatorError(f"{path}: cannot read: {error.strerror or error}") from None
    keys = KeysFile.parse(text)
    first = 1 + max(
        (
            int(entry.name[len(NAME_PREFIX) :])
            for entry in keys.entries
            if entry.name.startswith(NAME_PREFIX) and entry.name[len(NAME_PREFIX) :].isdigit()
        ),
        default=0,
    )
    added = keys.add_many((f"{NAME_PREFIX}{first + n:06d}" for n in range(count)), ANY_IP)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w", encoding="utf-8") as file:
            file.write(keys.render())
        os.replace(temp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise SimulatorError(f"{path}: cannot write: {error.strerror or error}") from None
    return added
