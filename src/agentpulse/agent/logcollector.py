"""A minimal logcollector: `<localfile><location>` files tailed, each new line sent as `1:<location>:<line>`.

Like Wazuh's logcollector with its defaults: a file is read from its end when the agent starts (only
future events), a line is what ends with `\\n` (a partial last line waits for its end), a line longer than
the largest message is cut, and a file that shrank or was replaced (rotation) is read again from its
start. It polls (every `POLL_INTERVAL`) from the agent's own loop; the reads are small and bounded
(`READ_MAX` a poll), so nothing here blocks the keep-alives for long.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from agentpulse.wire.secure import MAX_MESSAGE

POLL_INTERVAL: Final = 0.5
READ_MAX: Final = 1 << 20  # bytes read from one file in one poll
LOCALFILE_QUEUE: Final = b"1"


@dataclass(slots=True)
class _Tailed:
    location: str
    inode: int = -1
    offset: int = -1  # -1: not opened yet (start at the end)
    partial: bytes = b""


class LogCollector:
    def __init__(self, locations: tuple[str, ...]) -> None:
        self.files = [_Tailed(location) for location in locations]
        for tailed in self.files:
            self._reopen(tailed, at_end=True)

    def _reopen(self, tailed: _Tailed, *, at_end: bool) -> None:
        try:
            status = os.stat(tailed.location)
        except OSError:
            tailed.inode, tailed.offset = -1, 0  # appears later: read it from its start
            return
        tailed.inode = status.st_ino
        tailed.offset = status.st_size if at_end else 0
        tailed.partial = b""

    def poll(self) -> list[bytes]:
        """The events of the lines written since the last poll, oldest first."""
        events: list[bytes] = []
        for tailed in self.files:
            events.extend(self._read(tailed))
        return events

    def _read(self, tailed: _Tailed) -> list[bytes]:
        try:
            status = os.stat(tailed.location)
        except OSError:
            return []
        if status.st_ino != tailed.inode or status.st_size < tailed.offset:
            self._reopen(tailed, at_end=False)  # rotated or truncated: the new file from its start
        if status.st_size <= tailed.offset:
            return []
        try:
            with open(tailed.location, "rb") as file:
                file.seek(tailed.offset)
                data = file.read(READ_MAX)
        except OSError:
            return []
        tailed.offset += len(data)
        lines = (tailed.partial + data).split(b"\n")
        tailed.partial = lines.pop()
        prefix = LOCALFILE_QUEUE + b":" + tailed.location.encode("utf-8", "surrogateescape") + b":"
        room = MAX_MESSAGE - len(prefix)
        if len(tailed.partial) > room:  # a line with no end in sight: cut it, as logcollector does
            lines.append(tailed.partial)
            tailed.partial = b""
        return [prefix + line.rstrip(b"\r")[:room] for line in lines if line.strip()]
