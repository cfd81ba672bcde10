"""Re-read client.keys when it changes (inode, mtime or size), every `interval` seconds and on demand.

The watcher only reads the file and hands the parsed `KeysFile` on; the key store (`keystore.py`) decides
what changed. A missing file reads as empty: every agent is then removed.

Enrolment writes the file and hands its new lines to the key store at once (`applied()`). A read in flight
meanwhile may hold the file as it was before (it would take the new agents away until the next change),
or, between the write and `applied()`, the new agents before their writer has registered them: from
`hold()` to `applied()` (or `release()`) no read is taken, and one that overlapped is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from agentpulse.keysfile import read_keys_file
from agentpulse.wire.keys import KeysFile

Signature = tuple[int, int, int] | None
HOLD_RETRY = 0.05  # seconds before a read dropped for a writer is tried again


def read_keys(path: Path) -> KeysFile:
    """client.keys as remoted sees it: no file yet is no agent yet."""
    return read_keys_file(path, missing_ok=True)


def signature(path: Path) -> Signature:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class KeysWatcher:
    def __init__(self, path: Path, interval: float, on_change: Callable[[KeysFile], None]) -> None:
        self.path = path
        self.interval = interval
        self.on_change = on_change
        self.last: Signature = None
        self.generation = 0  # bumped by hold() and applied(): a read that started before is stale
        self.holds = 0  # writers between hold() and applied()/release()
        self._forced = asyncio.Event()

    async def load(self) -> KeysFile:
        """The first read, at start: remembers the signature so the watcher only reacts to changes."""
        self.last = await asyncio.to_thread(signature, self.path)
        return await asyncio.to_thread(read_keys, self.path)

    def trigger(self) -> None:
        self._forced.set()

    def hold(self) -> None:
        """A writer is about to change the file and will apply its lines itself: take no read until then."""
        self.holds += 1
        self.generation += 1

    def release(self) -> None:
        """The writer that held did not change the file after all."""
        self.holds = max(0, self.holds - 1)
        self.generation += 1

    def applied(self, before: Signature, after: Signature) -> None:
        """Lines of the file were applied without a read (the writer changed it from `before` to `after`):
        a read in flight is stale, and if nothing else changed the file, there is nothing to re-read."""
        self.release()
        if self.last == before:
            self.last = after

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._forced.wait(), self.interval)
            forced = self._forced.is_set()
            self._forced.clear()
            generation = self.generation
            current = await asyncio.to_thread(signature, self.path)
            if current == self.last and not forced:
                continue
            keys = await asyncio.to_thread(read_keys, self.path)
            if self.generation != generation or self.holds:  # a writer applies its own lines: read again
                asyncio.get_running_loop().call_later(HOLD_RETRY, self._forced.set)
                continue
            self.last = current
            self.on_change(keys)
