"""Re-read client.keys when it changes (inode, mtime or size), every `interval` seconds and on demand.

The watcher only reads the file and hands the parsed `KeysFile` on; the key store (`keystore.py`) decides
what changed. A missing file reads as empty: every agent is then removed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from agentpulse.keysfile import read_keys_file
from agentpulse.wire.keys import KeysFile

Signature = tuple[int, int, int] | None


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
        self._forced = asyncio.Event()

    async def load(self) -> KeysFile:
        """The first read, at start: remembers the signature so the watcher only reacts to changes."""
        self.last = await asyncio.to_thread(signature, self.path)
        return await asyncio.to_thread(read_keys, self.path)

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
            self.on_change(await asyncio.to_thread(read_keys, self.path))
