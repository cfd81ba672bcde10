"""Notice when client.keys changes (inode, mtime or size), checked every `interval` seconds and on demand
(SIGHUP), and read it strictly for a reload.

The watcher only reads the file (`keysfile.check_keys_file`: the entries and every invalid line) and says
when to reload; whether the new file is accepted is `keyguard.py`'s decision, taken by the manager.
A missing file reads as an empty one: the guard then sees every agent removed.
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
        self._forced = asyncio.Event()

    async def load(self) -> CheckedKeys:
        """Read the file now; remembers its signature, so the watcher reacts to the next change only."""
        self.last = await asyncio.to_thread(signature, self.path)
        return await asyncio.to_thread(check_keys_file, self.path)

    def trigger(self) -> None:
        self._forced.set()

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
