"""client.keys changes made while the manager runs: enrolment's new lines and removals (the API, another
node's), each applied to the key store, remoted and every worker before the keys lock is let go."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from agentpulse.keysfile import KeysLock, KeysRead, read_keys_file, write_keys_lines
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.keywatch import KeysWatcher, Signature, signature
from agentpulse.remoted.server import Remoted, disconnect_gone
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.store.facade import Store

log = logging.getLogger(__name__)


class EnrolledKeys:
    """Enrolment's new keys (new agents, replaced ones as removed lines), on their way to remoted: this
    process's key store and remoted take them at once, and every worker process before `take()` returns
    (bounded), so an agent that has its key is accepted wherever it connects. The key reload holds off
    meanwhile (`KeysWatcher.hold()`): it must not register the new agents before enrolment does."""

    def __init__(
        self,
        keys: KeyStore,
        watcher: KeysWatcher,
        remoted: Remoted | None,
        pool: WorkerPool | None,
        store: Store,
    ) -> None:
        self.keys = keys
        self.watcher = watcher
        self.remoted = remoted
        self.pool = pool
        self.store = store

    def hold(self) -> None:
        self.watcher.hold()

    def release(self) -> None:
        self.watcher.release()

    async def take(self, lines: list[str], before: Signature, after: Signature) -> None:
        change = self.keys.apply_lines(lines)
        self.watcher.applied(before, after)
        if self.remoted is not None:
            self.remoted.keys_changed(change)
            return
        disconnect_gone(change, self.store, time.time())
        assert self.pool is not None
        await self.pool.add_keys(lines, before, after)


def remove_key_lines(path: Path, ids: list[int], purge: bool) -> tuple[list[str], Signature, Signature]:
    """Mark these agents removed in client.keys (`!name`, as manage_agents does; with purge their lines
    go), under the keys lock. The removed lines and the file's signature before and after."""
    with KeysLock(path):
        before = signature(path)
        keys = read_keys_file(path, mode=KeysRead.EDIT, missing_ok=True)
        removed = []
        for agent_id in ids:
            with contextlib.suppress(KeyError):
                removed.append(keys.remove(agent_id).line())
        if not removed:
            return [], before, before
        lines = keys.render().splitlines()
        if purge:
            gone = set(removed)
            lines = [line for line in lines if line not in gone]
        write_keys_lines(path, lines)
        return removed, before, signature(path)


def unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove %s: %s", path, error)
