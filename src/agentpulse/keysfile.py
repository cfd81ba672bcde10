"""client.keys on disk: the one reader (`read_keys_file`), the strict one a reload is judged by
(`check_keys_file`) and the one atomic writer (`write_keys_file`).

Parsing is `wire.keys`; this module only moves the file's bytes (`KeysRead` says how a reader takes them).
The manager reads with `check_keys_file`: every line valid, or the reasons it is not.
The danger is a half-written file: remoted reloads client.keys on an mtime or inode change, so the writer
goes through a temporary file in the same directory, fsync and `os.replace`.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
from pathlib import Path
from typing import Final

from agentpulse.wire.keys import FILE_MAX, CheckedKeys, KeysFile, KeysProblem, check_keys

__all__ = ["KEYS_MODE", "KeysRead", "check_keys_file", "read_keys_file", "write_keys_file"]

KEYS_MODE: Final = 0o640
ENCODING: Final = "utf-8"
EXACT: Final = "surrogateescape"  # undecodable bytes survive a read and a write unchanged


class KeysRead(enum.Enum):
    """How a reader takes the file's text.

    Readers that look keys up (remoted, the agent) decode UTF-8 with errors replaced; an editor
    (manage_agents) reads with `EDIT`, so any byte round-trips and lines split on `\\n` only, and a rewrite
    leaves every untouched line as it was.
    """

    LOOKUP = enum.auto()  # errors replaced, lines as str.splitlines(): for finding keys
    EDIT = enum.auto()  # every byte kept, lines split on "\n" only: for writing the file back


def read_keys_file(path: Path, *, mode: KeysRead = KeysRead.LOOKUP, missing_ok: bool = False) -> KeysFile:
    """The parsed file. A missing one is an empty `KeysFile` with `missing_ok`, else FileNotFoundError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return KeysFile([])
        raise
    if mode is KeysRead.LOOKUP:
        return KeysFile.parse(data.decode(ENCODING, "replace"))
    lines = data.decode(ENCODING, EXACT).split("\n")
    if lines[-1] == "":
        lines.pop()
    return KeysFile(lines)


def check_keys_file(path: Path) -> CheckedKeys:
    """The file read strictly (`wire.keys.check_keys`); a missing one is an empty, valid file (no agent
    yet), one that cannot be read is refused as a whole (line 0). At most FILE_MAX + 1 bytes are read:
    a larger file is refused without holding it in memory."""
    try:
        with path.open("rb") as handle:
            data = handle.read(FILE_MAX + 1)
    except FileNotFoundError:
        return CheckedKeys(KeysFile([]), ())
    except OSError as error:
        return CheckedKeys(KeysFile([]), (KeysProblem(0, f"cannot read {path}: {error.strerror or error}"),))
    return check_keys(data)


def write_keys_file(path: Path, keys: KeysFile) -> None:
    """Replace `path` atomically with `keys.render()`, mode 0640, keeping the group of the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = keys.render().encode(ENCODING, EXACT)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), KEYS_MODE)
            with contextlib.suppress(OSError):  # no old file, or not allowed to chgrp: keep ours
                os.fchown(handle.fileno(), -1, path.stat().st_gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
