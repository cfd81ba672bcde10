"""`KeysSync`: keys enrolled on one node usable on every node within a second. The shared PostgreSQL holds
every agent's key (`agent.internal_key`, written with its registration); every second each node appends to
its own client.keys the agents it lacks, under the keys file's lock, and has its key reload run at once.

An id this node's file knows in any form (a removed `!` line included) is never added again, so a removal
made here is not undone. Removals spread too: an agent this sync saw in the database and that is gone
from it since (removed on another node: manage_agents -r, DELETE /agents, a purge) while this node still
has its key is removed here (`removed`: marked `!` in client.keys, its connection closed), within a
second or so. The danger is a key in the database that should not be trusted: the database is as
sensitive as client.keys (see docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final

import psycopg

from agentpulse.cluster.lease import Connection, Ticker, close_quietly, connect
from agentpulse.keysfile import KeysLock, KeysRead, read_keys_file, write_keys_lines

log = logging.getLogger(__name__)

SYNC_INTERVAL: Final = 1.0
_WITH_KEYS: Final = "FROM agent WHERE id > 0 AND internal_key IS NOT NULL AND internal_key <> ''"
AGENT_KEYS: Final = (
    f"SELECT id, name, COALESCE(NULLIF(register_ip, ''), 'any'), internal_key {_WITH_KEYS} ORDER BY id"
)
# One row that changes when an agent with a key comes, goes or is given another key: the full read (50,000
# rows into Python, about 50 ms of a node's CPU every second, on every node) runs only then.
FINGERPRINT: Final = (
    "SELECT count(*), COALESCE(sum(id), 0), COALESCE(sum(hashtext(internal_key)::bigint), 0) " + _WITH_KEYS
)
FULL_READ_EVERY: Final = 30  # syncs: the full read also runs this often whatever the fingerprint says


class KeysSync:
    def __init__(
        self,
        dsn: str,
        node: str,
        client_keys: Path,
        known: Callable[[int], bool],
        reload: Callable[[], None],
        *,
        removed: Callable[[list[int]], Awaitable[object]] | None = None,
        in_db: Callable[[], Iterable[int]] | None = None,
        interval: float = SYNC_INTERVAL,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.client_keys = client_keys
        self.known = known  # the node's key store has this agent
        self.reload = reload  # run the key reload now (as SIGHUP does)
        self.removed = removed  # agents removed on another node: remove them here too
        self.interval = interval
        self.added = 0
        self.removals = 0
        # The agents of the database at the last read (at first, those it had when the store opened):
        # only those can be seen to go (an agent enrolled here is in this node's keys before its row is
        # committed, and must not look removed).
        self._in_db: set[int] | None = None
        self._initial = in_db
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticker = Ticker()
        self._fingerprint: tuple[int, ...] | None = None
        self._since_full = 0
        self.full_reads = 0

    async def start(self) -> None:
        if self._initial is not None:
            self._in_db = set(self._initial())
        self._ticker.reset()
        self._task = asyncio.create_task(self._run(), name=f"keys-sync-{self.node}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await self._ticker.end(task)
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_quietly(conn)

    async def _run(self) -> None:
        failing = False
        while not await self._ticker.sleep(self.interval):
            try:
                await self.once()
            except (psycopg.Error, OSError) as error:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await close_quietly(conn)
                if not failing:
                    log.warning("Node %s cannot read the cluster's keys: %s; retrying", self.node, error)
                failing = True
                continue
            failing = False

    async def once(self) -> int:
        """Append the agents this node lacks; how many were added."""
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn, f"agentpulse:{self.node}:keys")
        row = await (await self._conn.execute(FINGERPRINT)).fetchone()
        fingerprint = tuple(int(value) for value in row) if row is not None else None
        self._since_full += 1
        if fingerprint == self._fingerprint and self._since_full < FULL_READ_EVERY:
            return 0
        cursor = await self._conn.execute(AGENT_KEYS)
        rows = await cursor.fetchall()
        self.full_reads += 1
        added = await self._apply(rows)
        self._fingerprint, self._since_full = fingerprint, 0  # only once applied: a failure reads again
        return added

    async def _apply(self, rows: list[tuple[int, str, str, str]]) -> int:
        in_db = {int(row[0]) for row in rows}
        seen, self._in_db = self._in_db, in_db
        if seen is not None and self.removed is not None:
            gone = sorted(agent_id for agent_id in seen - in_db if self.known(agent_id))
            if gone:
                self.removals += len(gone)
                log.info("Node %s: %d agents removed on other nodes: removed here too", self.node, len(gone))
                await self.removed(gone)
        missing = [row for row in rows if not self.known(int(row[0]))]
        if not missing:
            return 0
        added = await asyncio.to_thread(self._append, missing)
        if added:
            self.added += added
            log.info("Node %s: %d agents enrolled on other nodes added to client.keys", self.node, added)
            self.reload()
        return added

    def _append(self, rows: list[tuple[int, str, str, str]]) -> int:
        with KeysLock(self.client_keys):
            keys = read_keys_file(self.client_keys, mode=KeysRead.EDIT, missing_ok=True)
            present = {entry.number for entry in keys.entries}
            lines = [
                f"{int(agent_id):03d} {name} {ip} {key}"
                for agent_id, name, ip, key in rows
                if int(agent_id) not in present
            ]
            if lines:
                write_keys_lines(self.client_keys, [*keys.render().splitlines(), *lines])
            return len(lines)
