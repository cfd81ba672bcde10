"""`SharedReceiver`: a pushed shared file as agentd's `receive_msg()` takes it (reference 15.5).

`#!-up file <md5> <name>` opens `etc/shared/<name>` (truncated), every later message without `#!-` is
appended, and `#!-close file ` checks the md5: a mismatch deletes the file, a match of `merged.mg` unpacks it
into `etc/shared/` (each file through a temporary name and a rename), deletes the files the archive no
longer holds, and the next keep-alive reports the new md5. The danger is the names: `..` is refused, `/`
and a leading `.` become `-`, as agentd does, and every unpacked name is checked (`shared.names`). The
chunks are kept in memory and written at the close, off the event loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agentpulse.shared.merge import md5_hex, unmerge
from agentpulse.shared.names import SHARED_FILE, BadName

log = logging.getLogger(__name__)

MAX_FILE: Final = 64 * 1024 * 1024  # a push larger than this is dropped (a manager cannot fill our memory)
UNMERGE_FAILED_EVENT: Final = "1:wazuh-agent:wazuh: Could not unmerge shared file."


@dataclass(slots=True)
class _Open:
    name: str
    md5: str
    data: bytearray = field(default_factory=bytearray)


class SharedReceiver:
    def __init__(self, shared_dir: Path) -> None:
        self.shared_dir = shared_dir
        self._open: _Open | None = None
        self.received = self.failed = 0

    @property
    def receiving(self) -> bool:
        return self._open is not None

    def begin(self, md5: str, name: str) -> Path | None:
        """`#!-up file`: the path to truncate now (blocking: the caller runs it off the loop), or None."""
        self._open = None
        if ".." in name:
            log.warning(
                "Shared file name '%s' is vulnerable to directory traversal attack: ignored", name[:64]
            )
            return None
        safe = name.replace("/", "-")
        if safe.startswith("."):
            safe = "-" + safe[1:]
        if not safe or "\0" in safe:
            return None
        self._open = _Open(safe, md5[:32])
        return self.shared_dir / safe

    def append(self, chunk: bytes) -> None:
        """A message without `#!-` while a file is open (agentd's fprintf "%s": up to a NUL)."""
        current = self._open
        if current is None:
            return
        chunk = chunk.split(b"\0", 1)[0]
        if len(current.data) + len(chunk) > MAX_FILE:
            log.warning("Shared file '%s' larger than %d bytes: dropped", current.name, MAX_FILE)
            self._open = None
            return
        current.data += chunk

    def abandon(self) -> None:
        """Another control message (or a lost connection) closes the file where it is: never verified."""
        self._open = None

    def close(self) -> tuple[str, str, bytes] | None:
        """`#!-close file `: (name, announced md5, bytes) to `finish` off the loop; None if nothing is open."""
        current, self._open = self._open, None
        if current is None:
            return None
        return current.name, current.md5, bytes(current.data)

    def finish(self, name: str, md5: str, data: bytes) -> bool:
        """Blocking: write, verify, unpack. True when the file is in place (and unpacked)."""
        path = self.shared_dir / name
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
        if md5_hex(data) != md5:
            log.debug("Failed md5 for: %s -- deleting.", path)
            path.unlink(missing_ok=True)
            self.failed += 1
            return False
        if name == SHARED_FILE and not self._unmerge(data):
            self.failed += 1
            return False
        self.received += 1
        log.info("Shared file '%s' received (%s, %d bytes)", name, md5, len(data))
        return True

    def _unmerge(self, data: bytes) -> bool:
        try:
            entries = unmerge(data)
        except (BadName, ValueError) as error:
            log.error("Could not unmerge shared file: %s", error)
            return False
        keep = {SHARED_FILE}
        for entry in entries:
            target = self.shared_dir / entry.name
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, entry.data)
            keep.add(entry.name.split("/", 1)[0])
        for existing in os.listdir(self.shared_dir):  # cldir_ex_ignore: what the archive no longer has
            if existing in keep:
                continue
            path = self.shared_dir / existing
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return True


def truncate(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb"):
        pass


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
