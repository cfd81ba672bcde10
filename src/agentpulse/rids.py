"""The `queue/rids/` counter files, on disk. The counter values live in `wire.counters`.

Wazuh rewrites `sender_counter` as `"%u:%u:"` from offset 0 after every message and never truncates it;
we do the same. The danger is cost: an agent persists after *every* message, so `SenderCounterFile`
keeps one descriptor open and does a single `pwrite()`, cheap enough to run on the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentpulse.wire.counters import SenderCounter

FILE_MODE = 0o640


def read_sender_counter(path: Path) -> SenderCounter:
    """The saved counter, or 0:0 when the file is missing or unreadable (the next message is then 0:1)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return SenderCounter()
    return SenderCounter.from_text(data)


class SenderCounterFile:
    """`queue/rids/sender_counter`, kept open and rewritten in place after every message.

    One `pwrite()` per message (no open, no seek, no truncate, no fsync): a few microseconds into the page
    cache. Like Wazuh, a crash can lose the last writes; the manager does not check counters by default
    (`verify_msg_id=0`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)

    def store(self, counter: SenderCounter) -> None:
        """Write `<global>:<local>:` at offset 0 without truncating, as StoreSenderCounter() does.

        A shorter number leaves old characters behind; readers stop at the second `:` (`fscanf("%u:%u")`).
        """
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        os.pwrite(self._fd, counter.to_text(), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SenderCounterFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
