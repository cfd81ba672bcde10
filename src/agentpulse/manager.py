"""The manager process: remoted, the store, the sweeper and the keys watcher as tasks of one event loop.

Start order matters: the store opens global.db and resets every live agent (code 5) before remoted accepts
a connection, so no status from the previous run survives into this one. Stop order too: listeners close
(remoted, then the query socket and the upkeep task, which write through the store), then the store writes
everything accepted, then the services that drain what the store committed (events), then the lock is
released.

Agents gone from client.keys (at start, or on a reload) are purged when `<database><purge_removed>` is on:
their rows leave global.db with a last status event (see `store/writer.py`), and their `<id>.db` and
`queue/rids/<id>` files are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import IO, Protocol

from agentpulse.config import Config
from agentpulse.paths import Home
from agentpulse.remoted.admission import AdmissionBook
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.keystore import KeysChange, KeyStore
from agentpulse.remoted.keywatch import KeysWatcher
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.remoted.server import Remoted, disconnect_gone
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.store.facade import Store
from agentpulse.store.sweeper import Sweeper
from agentpulse.store.upkeep import Upkeep
from agentpulse.wdb.server import WdbServer
from agentpulse.wire.keys import KeysFile

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 1.0


class AlreadyRunning(RuntimeError):
    pass


class Service(Protocol):
    """A part of the manager started after the store opens and before remoted listens (events, wdb).

    `Manager.services` stop after the store closed (they drain what it committed); `front_services`
    write through the store and stop before its last flush, so what they accepted is committed.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class HomeLock:
    """An exclusive lock on the pid file: a second manager on the same home refuses to start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the process
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise AlreadyRunning(
                f"another agentpulse manager (pid {pid}) is running on this home ({self.path.parent.parent.parent})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._file.close()
            self._file = None


class Manager:
    def __init__(self, home: Home, config: Config, log_level: str = "info") -> None:
        self.home = home
        self.config = config
        self.store = Store(
            Path(config.database.path) if config.database.path else home.db_dir,
            manager_host=config.global_.manager_host or socket.gethostname(),
            node_name=config.global_.node_name,
            flush_interval=config.database.flush_interval,
        )
        self.grace = GraceTracker(self.store.submit, config.remote.connection_grace)
        # client.keys in memory: remoted authenticates against it, events read names from it. With
        # several workers each holds its own copy, and this one serves the lookups by id.
        self.keys = KeyStore()
        # With one worker, remoted runs in this process. With several, they run in their own processes.
        self.remoted: Remoted | None = None
        self.scheduler: KeepaliveScheduler | None = None
        self.pool: WorkerPool | None = None
        if config.remote.worker_processes > 1:
            book = AdmissionBook(
                self.grace.holders, config.remote.connection_overtake_time, config.remote.verify_msg_id
            )
            self.pool = WorkerPool(
                str(home.root), config.remote.worker_processes, self.store, self.grace, book, log_level
            )
        else:
            self.remoted = Remoted(config, self.keys, self.store, self.grace)
            self.scheduler = KeepaliveScheduler(self.remoted, config.remote.manager_keepalive)
        self.sweeper = Sweeper(
            self.store,
            config.global_.agents_disconnection_time,
            config.global_.agents_disconnection_alert_time,
        )
        self.keys_watcher = KeysWatcher(
            home.client_keys, config.remote.keyupdate_interval, self._keys_changed
        )
        self.lock = HomeLock(home.pid_file)
        self._stop = asyncio.Event()
        self._purges: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self.services: list[Service] = []
        self.wdb = WdbServer(
            self.store,
            home.wdb_socket,
            allow_sql=config.database.allow_sql,
            send_to_agents=self.send_to_agents,
        )
        self.upkeep = Upkeep(
            self.store, config.database.max_fragmentation, config.database.fragmentation_check_interval
        )
        self.front_services: list[Service] = [self.wdb, self.upkeep]
        self._front_started: list[Service] = []
        if config.nats.enabled:
            from agentpulse.events.service import EventsService

            self.services.append(EventsService(config.nats, self.store, home, self.keys.name_of))

    async def run(self) -> None:
        self.home.create_layout()
        self.lock.acquire()
        try:
            await self._run()
        finally:
            self.lock.release()

    async def _run(self) -> None:
        keys = await self.keys_watcher.load()
        await asyncio.to_thread(self.store.open, list(keys.active()))
        started: list[Service] = []
        try:
            for service in self.services:
                await service.start()
                started.append(service)
            await self._serve(keys)
        finally:
            # Events drain the outbox last; the store's final flush then commits what they acknowledged,
            # so a clean restart does not publish those events again.
            for service in reversed(started):
                await service.stop()
            await asyncio.to_thread(self.store.close)

    async def _serve(self, keys: KeysFile) -> None:
        reset = self.store.reset_connections()
        if self.config.database.purge_removed:
            listed = {key.number for key in keys.active()}
            await self._purge(
                [(agent_id, f"{agent_id:03d}") for agent_id in self.store.agents if agent_id not in listed]
            )
        await asyncio.to_thread(self.store.flush_wait)
        log.info(
            "Started: %d agents in client.keys, %d reset to disconnected (code 5)",
            len(self.store.agents),
            reset,
        )
        self._load_keys(keys)
        try:
            for service in self.front_services:
                await service.start()
                self._front_started.append(service)
            await self._listen()
        finally:
            await self._stop_front()

    async def _stop_front(self) -> None:
        """Stop the services that write through the store (the last flush then commits what they took)."""
        while self._front_started:
            await self._front_started.pop().stop()

    async def _listen(self) -> None:
        if self.remoted is not None:
            await self.remoted.start()
        else:
            assert self.pool is not None
            await self.pool.start()
        await asyncio.to_thread(self._write_state)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.keys_watcher.trigger)
        tasks = [
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self.keys_watcher.run(), name="keys-watcher"),
        ]
        if self.config.remote.manager_keepalive.enabled and self.scheduler is not None:
            tasks.append(asyncio.create_task(self.scheduler.run(), name="keepalive-scheduler"))
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            log.info("Stopping")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The signal handlers stay until the loop closes: a second SIGTERM during the final flush
            # must not kill the process with its default action.
            if self.pool is not None:
                await self.pool.stop()
            if self.remoted is not None:
                await self.remoted.stop()
            self.grace.cancel_all()
            await self._stop_front()
            for task in list(self._purges):
                await task
            await asyncio.to_thread(self.store.flush_wait)
            log.info("Stopped: every accepted status change is committed")

    def stop(self) -> None:
        self._stop.set()

    def send_to_agents(self, agent_ids: list[int], payload: bytes) -> int:
        """Send a control message to connected agents (wherever their connection is); returns how many
        were sent here, or all of them when workers hold the connections (they send to those they hold)."""
        if self.remoted is None:
            assert self.pool is not None
            self.pool.send_to_agents(agent_ids, payload)
            return len(agent_ids)
        return sum(self.remoted.send_to_agent(agent_id, payload) for agent_id in agent_ids)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            if self.remoted is not None:
                self.remoted.housekeeping()
            self.sweeper.sweep()

    def _load_keys(self, keys: KeysFile) -> KeysChange:
        """client.keys into the key store; remoted here (or the workers, from their own copy) lets the
        connections of removed or changed keys go, and agents gone from the file are disconnected."""
        change = self.keys.load(keys)
        if self.remoted is not None:
            self.remoted.keys_changed(change)
        else:
            assert self.pool is not None
            self.pool.book.forget([key.number for key in change.removed])
            disconnect_gone(change, self.store, time.time())
        return change

    def _keys_changed(self, keys: KeysFile) -> None:
        change = self._load_keys(keys)
        added = self.store.add_agents(change.added)
        log.info(
            "client.keys reloaded: %d agents, %d new, %d changed or removed",
            len(self.keys),
            len(added),
            len(change.removed),
        )
        if self.config.database.purge_removed:
            gone = [(key.number, key.id) for key in change.gone]
            if gone:
                task = asyncio.create_task(self._purge(gone), name="purge-removed")
                self._purges.add(task)
                task.add_done_callback(self._purges.discard)

    async def _purge(self, agents: list[tuple[int, str]]) -> None:
        """Agents no longer in client.keys: out of global.db (with their `<id>.db`), rids files deleted."""
        if not agents:
            return
        removed = self.store.remove_agents(
            [agent_id for agent_id, _ in agents], time.time(), purge_files=True
        )
        rids = [self.home.rids_file(text) for _, text in agents]
        await asyncio.to_thread(_unlink_all, rids)
        log.info("Purged %d agents removed from client.keys", len(removed))

    def _write_state(self) -> None:
        if self.remoted is None:
            assert self.pool is not None
            host = self.config.remote.local_ip or "0.0.0.0"
            addresses = " ".join(f"{host}:{self.pool.tcp_port}/{p}" for p in self.config.remote.protocols)
        else:
            addresses = " ".join(f"{host}:{port}/{proto}" for host, port, proto in self.remoted.addresses)
        text = f"# State file for agentpulse-remoted\npid='{os.getpid()}'\nstarted='{int(time.time())}'\nlisten='{addresses}'\n"
        path = self.home.remoted_state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("cannot remove %s: %s", path, error)
