"""Notice when client.keys changes (inode, mtime or size), checked every `interval` seconds and on demand
(SIGHUP), and read it strictly (`keysfile.check_keys_file`) for a reload that `keyguard.py` judges.

Enrolment writes the file and applies its new lines itself: from `hold()` to `applied()` (or `release()`)
a reload must not read, and one whose read overlapped reads again (`generation`; see `Manager.reload_keys`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from agentpulse.keysfile import check_keys_file
from agentpulse.wire.keys import CheckedKeys

log = logging.getLogger(__name__)

Signature = tuple[int, int, int] | None
HOLD_RETRY = 0.05  # seconds before a read dropped for a writer is tried again


def signature(path: Path) -> Signature:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class KeysWatcher:
    def __init__(self, path: Path, interval: float, on_change: Callable[[], Awaitable[object]]) -> None:
        self.path = path
        self.interval = interval
        self.on_change = on_change  # reads the file through `load()` and decides
        self.last: Signature = None
        self.generation = 0  # bumped by hold() and applied(): a read that started before is stale
        self.holds = 0  # writers between hold() and applied()/release()
        self._forced = asyncio.Event()

    async def load(self) -> CheckedKeys:
        """Read the file now; remembers its signature, so the watcher reacts to the next change only."""
        self.last = await asyncio.to_thread(signature, self.path)
        return await asyncio.to_thread(check_keys_file, self.path)

    async def load_settled(self) -> tuple[CheckedKeys, int]:
        """`load()` once no writer holds the file, and again if one took it meanwhile; with the
        generation the read belongs to (`stale()` says whether a writer came since)."""
        while True:
            while self.holds:
                await asyncio.sleep(HOLD_RETRY)
            generation = self.generation
            checked = await self.load()
            if not self.stale(generation):
                return checked, generation

    def stale(self, generation: int) -> bool:
        """A writer held or applied lines since `generation`: a read taken then may lack them."""
        return self.generation != generation or self.holds > 0

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
            current = await asyncio.to_thread(signature, self.path)
            if current == self.last and not forced:
                continue
            self.last = current
            try:
                await self.on_change()
            except Exception:  # the next change, or SIGHUP, must still be noticed
                log.exception("client.keys reload failed")
