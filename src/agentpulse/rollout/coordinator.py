"""`Rollout`: on every keep-alive, whether the agent has its group's merged.mg, and the pushes that follow.

The store tells it each keep-alive (a store listener, on the manager's loop, after the ack has long gone).
The agent's reported `<md5> merged.mg` is compared with its group's (`SharedTree`); a difference queues a
push: one in flight per agent, at most `max_pushes` at once for the whole manager, the rest wait in arrival
order. The push itself runs in the remoted process holding the agent (`send`), which says how it ended
(`pushed`). `group_config_status` is written through the store only when it changes, and only a reported
md5 equal to the group's makes an agent `synced`: a push cut short never does (the agent deletes a file
whose md5 fails and reports the old one). The groups' files are rescanned every `shared_reload` seconds.
The agents' groups are read again when the store says they changed (every write of this node goes
through it); only where other nodes write the same database (`shared_database`) are they also read
every `shared_reload` seconds, since nothing tells this node of the others' writes (200,000 agents'
rows every 10 s was an eighth of a single node's manager samples in a restart storm).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agentpulse.backoff import backoff_delay
from agentpulse.shared.names import DEFAULT_GROUP, MULTIGROUP_SEPARATOR, check_group
from agentpulse.shared.tree import GroupFile, Merged, SharedTree
from agentpulse.status import LIVE
from agentpulse.store.facade import Store
from agentpulse.store.groups import CONFIG_NOT_SYNCED, CONFIG_SYNCED
from agentpulse.store.subscriber import Subscriber
from agentpulse.wire.control import Keepalive

log = logging.getLogger(__name__)

PushSender = Callable[[int, str, str], bool]  # agent, md5, merged.mg path -> asked (False: not connected)
# A push not answered by then is forgotten (its worker died; a UDP agent asked of every worker that none
# held). A 1 MB push to a slow agent takes tens of seconds.
PUSH_TIMEOUT: Final = 120.0
REFRESH_DELAY: Final = 0.2  # group changes arriving together cost one membership read
RETRY_BASE: Final = 5.0  # after the second push of the same md5 the agent still lacks: back off
RETRY_CAP: Final = 300.0
FREE_RETRIES: Final = 2  # pushes of one md5 to one agent before backing off (one may be cut by a drop)
TICK: Final = 1.0


@dataclass(slots=True)
class _Attempts:
    md5: str
    count: int = 0
    not_before: float = 0.0


class Rollout:
    def __init__(
        self,
        tree: SharedTree,
        store: Store,
        send: PushSender,
        *,
        shared_reload: float = 10.0,
        max_pushes: int = 64,
        push: bool = True,
        shared_database: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tree = tree
        self.store = store
        self.send = send
        self.shared_reload = shared_reload
        self.max_pushes = max_pushes
        self.push = push  # False (<shared_push>no): statuses only, nothing is ever sent
        self.shared_database = shared_database  # other nodes write memberships this store never hears of
        self.clock = clock
        self.monotonic = monotonic
        self.merged: dict[str, Merged] = {}  # group or CSV -> its merged.mg
        self.members: dict[int, str] = {}  # agent -> its group CSV
        self.statuses: dict[int, str] = {}  # agent -> group_config_status as written
        self.reported: dict[int, str | None] = {}  # agent -> the merged.mg md5 of its last keep-alive
        self.in_flight: dict[int, tuple[str, float]] = {}  # agent -> (md5, since, monotonic)
        self.queue: deque[int] = deque()
        self.queued: set[int] = set()
        self.forced: set[int] = set()  # queued by `push_group`, whatever their sum
        self.attempts: dict[int, _Attempts] = {}
        self.pushes_started = self.pushes_done = self.pushes_failed = 0
        self._dispatching = False
        self._scan_lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        self._stale = False  # a change came that no read of the memberships has covered yet
        self._task: asyncio.Task[None] | None = None
        self._subscriber = Subscriber(on_keepalive=self.on_keepalive, on_groups_changed=self.groups_changed)

    # -- life cycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """The default group's folder, every agent's groups, a first scan; then follow keep-alives."""
        await asyncio.to_thread(self.tree.ensure_default)
        await self._load_members()
        await self.reload()
        self.store.subscribe(self._subscriber)
        self._task = asyncio.create_task(self._run(), name="shared-files")

    async def stop(self) -> None:
        self.store.unsubscribe(self._subscriber)
        for task in (self._task, self._refresh):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        next_scan = self.monotonic() + self.shared_reload
        while True:
            await asyncio.sleep(TICK)
            self._expire_pushes()
            if self.monotonic() >= next_scan:
                next_scan = self.monotonic() + self.shared_reload
                try:
                    if self.shared_database:
                        await self._load_members()  # the other nodes' writes
                    await self.reload()
                except Exception as error:  # a file or a database read failed: the next scan tries again
                    log.error("Cannot scan the shared files or read the groups: %s", error)

    # -- the groups' files and the agents' groups ------------------------------------------------------------

    async def reload(self) -> dict[str, str]:
        async with self._scan_lock:
            multigroups = {csv for csv in self.members.values() if MULTIGROUP_SEPARATOR in csv}
            merged = await asyncio.to_thread(self.tree.scan, multigroups)
            changed = {
                key for key, now in merged.items() if key in self.merged and self.merged[key].md5 != now.md5
            }
            self.merged = merged
        if changed:
            log.info("Shared files changed: %s; pushing to the connected members", ", ".join(sorted(changed)))
            self._push_changed(changed)
        return {key: value.md5 for key, value in sorted(merged.items())}

    def _push_changed(self, keys: set[str]) -> None:
        """Wazuh pushes at each member's next keep-alive; the connected members' last reported md5 is known
        here, so those that lack the new file are queued at once (their keep-alive then only confirms)."""
        agents = self.store.agents
        for agent_id, csv in self.members.items():
            if csv in keys:
                view = agents.get(agent_id)
                if (
                    view is not None
                    and view.status in LIVE
                    and self.reported.get(agent_id) != self.merged[csv].md5
                ):
                    self._want(agent_id, self.merged[csv].md5)

    async def _load_members(self) -> None:
        reader = self.store.reader()
        rows = await asyncio.to_thread(reader.agent_group_lists)
        members: dict[int, str] = {}
        for agent_id, csv, config_status in rows:
            members[agent_id] = csv or DEFAULT_GROUP
            self.statuses.setdefault(agent_id, config_status)
        new_sets = {csv for csv in members.values() if csv not in self.merged}
        self.members = members
        for gone in [agent_id for agent_id in self.statuses if agent_id not in members]:
            self.statuses.pop(gone, None)
            self.reported.pop(gone, None)
            self.attempts.pop(gone, None)
        if new_sets and self.merged:
            await self.reload()  # a new multi-group needs its merged.mg before its members' keep-alives

    def groups_changed(self) -> None:
        """Store listener: groups or memberships changed. Read them again once committed (coalesced)."""
        self._stale = True
        if self._refresh is None or self._refresh.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a store write from a thread (tests, tools): the next scan reads them
                return
            self._refresh = loop.create_task(self._refreshed(), name="shared-members")

    async def _refreshed(self) -> None:
        # A change that comes while a read is under way may be committed after that read saw the table:
        # it marks the memberships stale again, and they are read once more (it was lost before).
        while self._stale:
            self._stale = False
            await asyncio.sleep(REFRESH_DELAY)
            await asyncio.wrap_future(self.store.committed())
            await self._load_members()

    # -- keep-alives (the store calls this on the loop for every one: keep it cheap) ------------------------

    def on_keepalive(self, agent_id: int, at: float, keepalive: Keepalive) -> None:
        csv = self.members.get(agent_id)
        if csv is None:
            self.groups_changed()  # an agent added since the last read: known at its next keep-alive
            return
        self.reported[agent_id] = keepalive.merged_sum
        merged = self.merged.get(csv)
        if merged is None or keepalive.merged_sum == merged.md5:
            status = CONFIG_SYNCED  # Wazuh: synced too when the group has no merged.mg
            self.attempts.pop(agent_id, None)
        else:
            status = CONFIG_NOT_SYNCED
            self._want(agent_id, merged.md5)
        if self.statuses.get(agent_id) != status:
            self.statuses[agent_id] = status
            self.store.set_config_statuses({agent_id: status}, at)

    def _want(self, agent_id: int, md5: str) -> None:
        if agent_id in self.in_flight or agent_id in self.queued:
            return
        attempts = self.attempts.get(agent_id)
        if attempts is not None and attempts.md5 == md5 and self.monotonic() < attempts.not_before:
            return
        self._enqueue(agent_id)

    def _enqueue(self, agent_id: int) -> None:
        if not self.push:
            return
        self.queue.append(agent_id)
        self.queued.add(agent_id)
        self._dispatch()

    def _dispatch(self) -> None:
        self._dispatching = True
        try:
            self._dispatch_queued()
        finally:
            self._dispatching = False

    def _dispatch_queued(self) -> None:
        while self.queue and len(self.in_flight) < self.max_pushes:
            agent_id = self.queue.popleft()
            self.queued.discard(agent_id)
            forced = agent_id in self.forced
            self.forced.discard(agent_id)
            merged = self.merged.get(self.members.get(agent_id, ""))
            if merged is None or agent_id in self.in_flight:
                continue
            attempts = self.attempts.get(agent_id)
            if attempts is None or attempts.md5 != merged.md5:
                attempts = self.attempts[agent_id] = _Attempts(merged.md5)
            attempts.count += 1
            if attempts.count > FREE_RETRIES and not forced:
                delay = backoff_delay(attempts.count - FREE_RETRIES, base=RETRY_BASE, cap=RETRY_CAP)
                attempts.not_before = self.monotonic() + delay
            self.in_flight[agent_id] = (merged.md5, self.monotonic())
            self.pushes_started += 1
            if not self.send(agent_id, merged.md5, str(merged.path)):
                self.pushed(agent_id, merged.md5, False)

    def pushed(self, agent_id: int, md5: str, ok: bool) -> None:
        """How a push ended (from the remoted process that held the agent). The agent is `synced` only
        once its own keep-alive reports the md5."""
        current = self.in_flight.get(agent_id)
        if current is None or current[0] != md5:
            return
        del self.in_flight[agent_id]
        if ok:
            self.pushes_done += 1
        else:
            self.pushes_failed += 1
        if not self._dispatching:  # a push refused at once, inside _dispatch: its loop goes on
            self._dispatch()

    def _expire_pushes(self) -> None:
        deadline = self.monotonic() - PUSH_TIMEOUT
        for agent_id, (md5, since) in list(self.in_flight.items()):
            if since < deadline:
                log.warning("Push of merged.mg to agent %03d not answered in %.0f s", agent_id, PUSH_TIMEOUT)
                self.pushed(agent_id, md5, False)

    # -- what operators ask (SharedControl) ----------------------------------------------------------------

    async def files(self, group: str) -> list[GroupFile] | None:
        check_group(group)
        if not await asyncio.to_thread(self.tree.group_dir(group).is_dir):
            return None
        return await asyncio.to_thread(self.tree.files, group)

    async def create_group(self, group: str) -> None:
        if await asyncio.to_thread(self.tree.create_group, group):
            await self.reload()

    def _members_of(self, group: str) -> list[int]:
        return [
            agent_id for agent_id, csv in self.members.items() if group in csv.split(MULTIGROUP_SEPARATOR)
        ]

    def push_group(self, group: str) -> int:
        """Every connected member gets its merged.mg now, even one that reports the right md5."""
        check_group(group)
        if not self.push:
            return 0
        agents = self.store.agents
        queued = 0
        for agent_id in self._members_of(group):
            view = agents.get(agent_id)
            if view is None or view.status not in LIVE or agent_id in self.in_flight:
                continue
            self.attempts.pop(agent_id, None)
            self.forced.add(agent_id)
            if agent_id not in self.queued:
                self._enqueue(agent_id)
            queued += 1
        return queued

    def group_status(self, group: str) -> dict[str, object]:
        """Members, synced (reported the md5), pending (connected, not yet), disconnected, pushes in flight."""
        check_group(group)
        agents = self.store.agents
        counts = {"members": 0, "synced": 0, "pending": 0, "disconnected": 0, "pushing": 0}
        for agent_id in self._members_of(group):
            view = agents.get(agent_id)
            counts["members"] += 1
            merged = self.merged.get(self.members[agent_id])
            if merged is None or self.reported.get(agent_id) == merged.md5:  # no file: nothing to lack
                counts["synced"] += 1
            elif view is not None and view.status in LIVE:
                counts["pending"] += 1
            else:
                counts["disconnected"] += 1
            if agent_id in self.in_flight:
                counts["pushing"] += 1
        own = self.merged.get(group)
        return {"group": group, "md5": own.md5 if own else None, **counts, "queued": len(self.queue)}
