"""`KeyReloads`: client.keys read again, judged once (`keyguard.py`) and applied whole, or refused.

The danger is a broken or truncated client.keys: it must not purge the fleet. Every read (the start's, the
`keyupdate_interval` check, SIGHUP, `agentpulse keys reload [--force]` through the query socket) is judged
against the keys in use and the agents global.db holds, and applied to the key store, remoted here and
every worker, or refused with one error line and the counters the state file and metrics show. Agents
removed through the API or by another node go the same way to remoted (`remove`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from agentpulse.config import Config
from agentpulse.manager.keyedits import EnrolledKeys, remove_key_lines, unlink_all
from agentpulse.paths import Home
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.records import MANAGER_ID
from agentpulse.remoted import keyguard
from agentpulse.remoted.keyguard import ReloadCounters, ReloadDecision, ReloadLimits
from agentpulse.remoted.keystore import KeysChange, KeyStore
from agentpulse.remoted.keywatch import KeysWatcher
from agentpulse.remoted.server import Remoted, disconnect_gone
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.store.facade import Store
from agentpulse.wire.keys import CheckedKeys, KeysFile

log = logging.getLogger(__name__)

KEYS_APPLY_TIMEOUT = 10.0  # seconds an accepted reload waits for every worker to use the new keys


class KeyReloads:
    """The manager's client.keys: the watcher that reads it, the guard's verdicts and their counters.

    Owns the watcher (its callback is `reload`), one reload at a time, and the purges a reload starts.
    `reloaded` runs after every reload once the manager is serving (it rewrites the state file).
    """

    def __init__(
        self,
        config: Config,
        home: Home,
        keys: KeyStore,
        store: Store,
        remoted: Remoted | None,
        pool: WorkerPool | None,
        reloaded: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self.home = home
        self.keys = keys
        self.store = store
        self.remoted = remoted
        self.pool = pool
        self.reloaded = reloaded
        self.watcher = KeysWatcher(home.client_keys, config.remote.keyupdate_interval, self.reload)
        self.limits = ReloadLimits(
            config.remote.keys_reload_max_removed, config.remote.keys_reload_max_removed_percent
        )
        self.counters = ReloadCounters()
        self._reloading = asyncio.Lock()  # one reload at a time: the watcher's, SIGHUP's and the CLI's
        self._refusals = RateLimitedLog(log)
        self._purges: set[asyncio.Task[None]] = set()

    def enrolled(self) -> EnrolledKeys:
        """How enrolment (and removals) hand their lines to the key store, remoted and the workers."""
        return EnrolledKeys(self.keys, self.watcher, self.remoted, self.pool, self.store)

    async def at_start(self, checked: CheckedKeys) -> None:
        """The start's verdict on the file against global.db: purge what it lacks, or refuse, said once."""
        decision = keyguard.decide({}, checked, self.limits, also_known=self._stored_agents())
        if decision.accepted:
            await self._purge([(agent_id, f"{agent_id:03d}") for agent_id in decision.removed])
        else:
            self._refused_at_start(decision)

    async def reload(self, force: bool = False) -> ReloadDecision:
        """Read client.keys and apply it if the guard accepts it."""
        async with self._reloading:
            while True:
                # Not while enrolment writes the file and applies its lines (`EnrolledKeys`): a read
                # taken then lacks them, and the guard would count the new agents as removed.
                checked, generation = await self.watcher.load_settled()
                # Off the loop: 200,000 keys take a second. Enrolment changes the key store's lines in
                # place, so the guard judges a copy; if it enrolled meanwhile, the file is read again.
                decision = await asyncio.to_thread(
                    keyguard.decide,
                    dict(self.keys.lines),
                    checked,
                    self.limits,
                    also_known=self._stored_agents(),
                    force=force,
                )
                if not self.watcher.stale(generation):
                    break
            self.counters.count(decision, time.time())
            if decision.accepted:
                await self._apply(checked.keys, decision)
            else:
                self._refusals.error("keys-refused", "client.keys reload %s", decision.message())
            await self.reloaded()
            return decision

    def load(self, keys: KeysFile) -> KeysChange:
        """Accepted keys into the key store; remoted here (or every worker, sent the same lines) lets the
        connections of removed or changed keys go, and agents gone from the file are disconnected."""
        change = self.keys.load(keys)
        if self.remoted is not None:
            self.remoted.keys_changed(change)
        else:
            assert self.pool is not None
            self.pool.book.forget([key.number for key in change.removed])
            self.pool.load_keys("".join(line + "\n" for line in self.keys.lines.values()))
            disconnect_gone(change, self.store, time.time())
        return change

    async def remove(self, ids: list[int], *, purge: bool) -> list[str]:
        """The agents' lines out of client.keys (marked `!`, or gone with `purge`) under the keys lock, and
        the key store, remoted and workers told before the lock is let go; the lines removed."""
        keys = self.enrolled()
        keys.hold()
        try:
            lines, before, after = await asyncio.to_thread(
                remove_key_lines, self.home.client_keys, ids, purge
            )
        except BaseException:
            keys.release()
            raise
        if lines:
            await keys.take(lines, before, after)
        else:
            keys.release()
        return lines

    async def settle(self) -> None:
        """Until the purges under way have ended (at a stop, before the last flush)."""
        for task in list(self._purges):
            await task

    async def _apply(self, keys: KeysFile, decision: ReloadDecision) -> None:
        change = self.load(keys)
        self.store.add_agents(change.added)
        if self.pool is not None and not await self.pool.keys_applied(KEYS_APPLY_TIMEOUT):
            log.warning("client.keys reload: not every remoted worker confirmed the new keys in time")
        log.info("client.keys reload %s", decision.message())
        if self.config.database.purge_removed and decision.removed:
            ids = {key.number: key.id for key in change.gone}
            gone = [(number, ids.get(number, f"{number:03d}")) for number in decision.removed]
            task = asyncio.create_task(self._purge(gone), name="purge-removed")
            self._purges.add(task)
            task.add_done_callback(self._purges.discard)

    def _stored_agents(self) -> set[int]:
        """The agents a reload removes besides those of the keys in use: with purge_removed, every agent
        global.db holds (a start that refused to purge leaves some there), else none."""
        if not self.config.database.purge_removed:
            return set()
        return {agent_id for agent_id in self.store.agents if agent_id != MANAGER_ID}

    def _refused_at_start(self, decision: ReloadDecision) -> None:
        if decision.problems:
            what = (
                f"client.keys has {decision.problems_text()}; started with its {len(self.keys)} valid "
                "entries and purged nothing; fix the file (it is reloaded when it changes)"
            )
        else:
            what = (
                f"client.keys lacks {len(decision.removed)} of the {decision.known} agents global.db has, "
                f"more than the {decision.allowed} a reload may remove at once: started with the "
                f"{len(self.keys)} agents of the file; the others stay in global.db, disconnected, NOT "
                "purged; `agentpulse keys reload --force` purges them, or restore client.keys"
            )
        self.counters.count(decision, time.time(), what)
        log.error("%s", what)

    async def _purge(self, agents: list[tuple[int, str]]) -> None:
        """Agents no longer in client.keys: out of global.db (with their `<id>.db`), rids files deleted.

        Run at start and on a reload when `<database><purge_removed>` is on. Their rows leave global.db with
        a last status event (see `Store.remove_agents`), and their `<id>.db` and `queue/rids/<id>` files
        are deleted.
        """
        if not agents:
            return
        removed = self.store.remove_agents(
            [agent_id for agent_id, _ in agents], time.time(), purge_files=True
        )
        rids = [self.home.rids_file(text) for _, text in agents]
        await asyncio.to_thread(unlink_all, rids)
        log.info("Purged %d agents removed from client.keys", len(removed))
