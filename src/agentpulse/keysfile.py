"""client.keys on disk: the one reader (`read_keys_file`), the strict one a reload is judged by
(`check_keys_file`), the one atomic writer (`write_keys_file`) and the writers' lock (`KeysLock`).

Parsing is `wire.keys`; this module only moves the file's bytes (`KeysRead` says how a reader takes them).
A half-written file is avoided with a temporary file, fsync and `os.replace`; two writers (manage_agents,
enrolment) losing each other's lines with `KeysLock`, an flock held from a writer's read to its write.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Final

from agentpulse.wire.keys import FILE_MAX, CheckedKeys, KeysFile, KeysProblem, check_keys

__all__ = [
    "KEYS_MODE",
    "KeysLock",
    "KeysRead",
    "check_keys_file",
    "lock_path",
    "read_keys_file",
    "write_keys_file",
    "write_keys_lines",
]

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
    _write(path, keys.render().encode(ENCODING, EXACT))


def write_keys_lines(path: Path, lines: Iterable[str]) -> None:
    """`write_keys_file` for lines already at hand (as `KeysRead.EDIT` read them): no parse on the way."""
    _write(path, "".join(line + "\n" for line in lines).encode(ENCODING, EXACT))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
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


def lock_path(path: Path) -> Path:
    """The lock file of a keys file: `etc/.client.keys.lock` for `etc/client.keys`."""
    return path.parent / f".{path.name}.lock"


class KeysLock:
    """The one write lock of a keys file, shared by every process that edits it.

    `with KeysLock(path):` around read, edit and write (blocking: from a thread when on an event loop).
    `acquire()` / `release()` for a holder that spans awaits (enrolment holds it from its read to its write).
    An flock goes with its open file, so a crashed holder never leaves the file locked.
    """

    def __init__(self, path: Path) -> None:
        self.path = lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, KEYS_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> KeysLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
