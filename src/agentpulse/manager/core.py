"""The manager process: remoted, the store, the sweeper and the keys watcher as tasks of one event loop.

The danger is order (see `Manager`): the store replays what remoted acknowledged and never committed (the
acknowledgement journal) and resets every live agent (code 5) before remoted accepts a connection, and on
the way out everything that writes through the store stops before its last flush. client.keys reloads,
and the guard that keeps a broken file from purging the fleet, are `keyreload.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Protocol

from agentpulse import filemodes
from agentpulse.config import Config
from agentpulse.looplag import LoopLag, overload_of
from agentpulse.manager.api_link import ManagerApi
from agentpulse.manager.homefiles import warn_exposed_files, write_state_file
from agentpulse.manager.homelock import HomeLock
from agentpulse.manager.keyreload import KeyReloads
from agentpulse.metrics.listener import MetricsListener
from agentpulse.metrics.registry import Metrics
from agentpulse.paths import Home
from agentpulse.records import StatusUpdate
from agentpulse.remoted import slowdown
from agentpulse.remoted.grace import LOCAL, GraceTracker
from agentpulse.remoted.intake import build_intake
from agentpulse.remoted.journal import AckJournal, clear_journals, keep_for, read_journals
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.pushes import SharedPushes
from agentpulse.remoted.replay import ReplayBook
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.remoted.server import MANAGER_VERSION, Remoted
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.rollout.coordinator import Rollout
from agentpulse.shared.tree import SharedTree
from agentpulse.stopguard import StopGuard
from agentpulse.store.backends import backend_for, db_dir_of
from agentpulse.store.facade import Store
from agentpulse.store.sweeper import Sweeper
from agentpulse.store.upkeep import Upkeep
from agentpulse.wdb.server import WdbServer
from agentpulse.wire.keys import CheckedKeys

if TYPE_CHECKING:
    from agentpulse.api.service import ApiService
    from agentpulse.authd.service import EnrolmentService
    from agentpulse.cluster.losses import LossGate
    from agentpulse.cluster.service import ClusterService
    from agentpulse.events.service import EventsService

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 1.0


class Service(Protocol):
    """A part of the manager started after the store opens and before remoted listens (events, wdb).

    `Manager.services` stop after the store closed (they drain what it committed); `front_services`
    write through the store and stop before its last flush, so what they accepted is committed.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Manager:
    """One manager home served until `stop()`.

    Start order matters: the store opens global.db and resets every live agent (code 5), and commits
    that, before remoted accepts a connection, so no status from the previous run survives into this one
    (remoted's worker processes start meanwhile, and listen only after). Stop order too:
    listeners close (remoted, then the query socket and the upkeep task, which write through the store),
    then the store writes everything accepted, then the services that drain what the store committed
    (events), then the lock is released.
    """

    def __init__(self, home: Home, config: Config, log_level: str = "info") -> None:
        self.home = home
        self.config = config
        db_dir = db_dir_of(config.database, home.db_dir)
        manager_host = config.global_.manager_host or socket.gethostname()
        self.store = Store(
            db_dir,
            manager_host=manager_host,
            node_name=config.global_.node_name,
            flush_interval=config.database.flush_interval,
            max_pending=config.database.max_pending,
            backend=backend_for(
                config.database, db_dir, manager_host=manager_host, node_name=config.global_.node_name
            ),
        )
        self.grace = GraceTracker(
            self._connection_lost,
            config.remote.connection_grace,
            allowance=self._behind,
            max_stretch=config.global_.agents_disconnection_time,
        )
        # client.keys in memory: remoted authenticates against it, events read names from it. With
        # several workers each holds its own copy, and this one serves the lookups by id.
        self.keys = KeyStore()
        # With one worker, remoted runs in this process. With several, they run in their own processes.
        self.remoted: Remoted | None = None
        self.scheduler: KeepaliveScheduler | None = None
        self.pool: WorkerPool | None = None
        self.journal: AckJournal | None = None  # this process's, when remoted runs here
        self.lag = LoopLag()  # this process's loop: the sweeper (and remoted, when here) allow for it
        if config.remote.worker_processes > 1:
            book = ReplayBook(
                self.grace.holder_mask, config.remote.connection_overtake_time, config.remote.verify_msg_id
            )
            self.pool = WorkerPool(
                str(home.root), config.remote.worker_processes, self.store, self.grace, book, log_level
            )
        else:
            self.journal = AckJournal(home.ack_journal_dir, LOCAL, keep_for(config.database.flush_interval))
            self.remoted = Remoted(
                config,
                self.keys,
                self.store,
                self.grace,
                journal=self.journal,
                lag=self.lag,
                intake=build_intake(config, home, 0, 1),
            )
            self.scheduler = KeepaliveScheduler(self.remoted, config.remote.manager_keepalive, lag=self.lag)
            slowdown.apply(self.remoted)  # TEST ONLY, and only when its variable is set
        # Shared files (docs/shared-files.md): the rollout compares each keep-alive's merged.mg md5 with the
        # agent's group's and asks the remoted process holding the agent to push it (`_push`).
        self.rollout = Rollout(
            SharedTree(home.shared_dir, home.multigroups_dir),
            self.store,
            self._push,
            shared_reload=config.remote.shared_reload,
            max_pushes=config.remote.max_concurrent_pushes,
            push=config.remote.shared_push,
            shared_database=config.database.backend == "postgresql",
        )
        self.pushes = SharedPushes(self.remoted, self.rollout.pushed) if self.remoted is not None else None
        if self.pool is not None:
            self.pool.on_pushed = self.rollout.pushed
        self.sweeper = Sweeper(
            self.store,
            config.global_.agents_disconnection_time,
            config.global_.agents_disconnection_alert_time,
            allowance=self._behind,
        )
        self.key_reloads = KeyReloads(
            config, home, self.keys, self.store, self.remoted, self.pool, self._reloaded
        )
        self.keys_watcher = self.key_reloads.watcher
        self.started_at = 0
        self.lock = HomeLock(home.pid_file)
        self._stop = asyncio.Event()
        self.stop_guard = StopGuard()  # the stop ends within its deadline; a second signal forces it
        self.ready = asyncio.Event()
        self.services: list[Service] = []
        self.cluster: ClusterService | None = None
        self.losses: LossGate | None = None
        self.wdb = WdbServer(
            self.store,
            home.wdb_socket,
            allow_sql=config.database.allow_sql,
            send_to_agents=self.send_to_agents,
            max_clients=config.database.wdb_max_clients,
            idle_timeout=config.database.wdb_idle_timeout,
            reload_keys=self.key_reloads.reload,
            shared=self.rollout,
        )
        self.upkeep = Upkeep(
            self.store, config.database.max_fragmentation, config.database.fragmentation_check_interval
        )
        self.front_services: list[Service] = [self.wdb, self.upkeep, self.rollout]
        self._front_started: list[Service] = []
        self.authd: EnrolmentService | None = None
        if config.auth is not None and config.auth.listens:
            from agentpulse.authd.service import EnrolmentService

            self.authd = EnrolmentService(
                config.auth,
                home,
                self.store,
                self.key_reloads.enrolled(),
                manager_version=MANAGER_VERSION,
                hostname=socket.gethostname(),
            )
            self.front_services.append(self.authd)
        if config.database.backend == "postgresql":
            from agentpulse.manager.cluster_wiring import join_cluster

            join_cluster(self)
        self.events: EventsService | None = None
        if config.nats.enabled:
            from agentpulse.events.service import EventsService

            self.events = EventsService(config.nats, self.store, home, self.keys.name_of)
            self.services.append(self.events)
            if self.cluster is not None:  # one relay of the shared outbox: the leader's
                self.events.outbox.active = lambda: self.cluster is not None and self.cluster.leader
        # Prometheus metrics: `self.metrics.render` serves any /metrics (our listener, the HTTP API's).
        self.metrics = Metrics(
            self.store,
            sweeper=self.sweeper,
            grace=self.grace,
            remoted=self.remoted,
            pool=self.pool,
            events=self.events,
            enrolment=self.authd,
            reloads=self.key_reloads.counters,
        )
        if config.metrics.enabled:
            self.front_services.append(MetricsListener(config.metrics, self.metrics.render))
        self.api: ApiService | None = None
        if config.api is not None and config.api.enabled:
            self.api = ManagerApi(self).service()
            self.front_services.append(self.api)

    async def run(self) -> None:
        self.started_at = int(time.time())
        filemodes.set_manager_umask()
        warn_exposed_files(self.home, self.config)
        self.home.create_layout()
        self.lock.acquire()
        # From the first moment, not once listening: a SIGTERM during the start (a long store open, a
        # worker that never comes up) takes the normal way out, Stopping to Stopped, exit 0.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._signalled, signum)
        loop.add_signal_handler(signal.SIGHUP, self.keys_watcher.trigger)
        try:
            await self._run()
        finally:
            self.stop_guard.phase = "releasing the home lock and closing the event loop"
            self.lock.release()

    async def _run(self) -> None:
        checked = await self.keys_watcher.load()
        # The keys first, and the worker processes started with them: a worker takes seconds to start and
        # load 50,000 keys, done while the store opens and resets the last run's agents. It listens only
        # once that reset is committed (`_start_listeners`).
        self.key_reloads.load(checked.usable())
        started: list[Service] = []
        try:
            if self.pool is not None:
                await self.pool.spawn()
            await asyncio.to_thread(self.store.open, list(checked.usable().active()))
            for service in self.services:
                await service.start()
                started.append(service)
            await self._serve(checked)
        finally:
            if self.pool is not None:  # stopped already, unless the start failed before it listened
                await self.pool.stop()
            # Events drain the outbox last; the store's final flush then commits what they acknowledged,
            # so a clean restart does not publish those events again.
            for service in reversed(started):
                self.stop_guard.phase = f"stopping {type(service).__name__}"
                await service.stop()
            self.stop_guard.phase = "closing the store"
            await asyncio.to_thread(self.store.close)

    async def _serve(self, checked: CheckedKeys) -> None:
        acks = await asyncio.to_thread(read_journals, self.home.ack_journal_dir)
        restored = self.store.restore_acks(StatusUpdate(ack.agent_id, ack.trigger, ack.at) for ack in acks)
        reset = self.store.reset_connections()
        await self.key_reloads.at_start(checked)
        # Committed before any agent is taken (the workers listen after this): no status of the last run
        # survives into this one, in the database either.
        if await asyncio.to_thread(self.store.flush_wait):
            await asyncio.to_thread(clear_journals, self.home.ack_journal_dir)
        if restored:
            log.warning(
                "%d agents were acknowledged in the last run but not stored (the manager stopped "
                "without its last commit): restored from the acknowledgement journal",
                restored,
            )
        log.info(
            "Started: %d agents in client.keys, %d reset to disconnected (code 5)", len(self.keys), reset
        )
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
        tasks: list[asyncio.Task[None]] = []
        try:
            if not await self._start_listeners():
                return
            await asyncio.to_thread(self._write_state_file)
            tasks = [
                asyncio.create_task(self._housekeeping(), name="housekeeping"),
                asyncio.create_task(self.keys_watcher.run(), name="keys-watcher"),
            ]
            if self.config.remote.manager_keepalive.enabled and self.scheduler is not None:
                tasks.append(asyncio.create_task(self.scheduler.run(), name="keepalive-scheduler"))
            if self.journal is not None:
                tasks.append(asyncio.create_task(self.journal.run(), name="ack-journal"))
            self.lag.start()
            self.ready.set()
            await self._stop.wait()
        finally:
            log.info("Stopping")
            self.lag.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The signal handlers stay until the loop closes: a second SIGTERM during the final flush
            # must not kill the process with its default action.
            self.stop_guard.phase = "stopping remoted"
            if self.pool is not None:
                await self.pool.stop()
            if self.pushes is not None:
                await self.pushes.stop()
            if self.remoted is not None:
                await self.remoted.stop()
            self.grace.cancel_all()
            self.stop_guard.phase = "stopping the query socket, upkeep and enrolment"
            await self._stop_front()
            await self.key_reloads.settle()
            if self.journal is not None:
                self.journal.close()
            self.stop_guard.phase = "committing the last changes"
            if await asyncio.to_thread(self.store.flush_wait):
                # Everything acknowledged is committed: the next start has nothing to restore.
                await asyncio.to_thread(clear_journals, self.home.ack_journal_dir)
                self.stop_guard.committed = True
            log.info("Stopped: every accepted status change is committed")

    async def _start_listeners(self) -> bool:
        """remoted listens, here or in its workers; False when a stop came first (the start is undone).
        A worker that cannot start raises WorkerStartError, the others stopped."""
        if self._stop.is_set():
            return False
        if self.journal is not None:
            await asyncio.to_thread(self.journal.open)
        starting = asyncio.ensure_future(
            self.remoted.start() if self.remoted is not None else self._require_pool().listen()
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()  # the pool stops the workers it started
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return False
        starting.result()
        return True

    def _connection_lost(self, update: StatusUpdate) -> None:
        """The grace ran out (code 6): said to be under overload when the manager was behind then. With
        several nodes it is first decided against the other nodes' bindings (`cluster/losses.py`)."""
        overload = overload_of(self._behind())
        update = dataclasses.replace(update, overload=overload) if overload else update
        if self.losses is not None:
            self.losses.add(update)
        else:
            self.store.submit(update)

    # -- several nodes (docs/cluster.md; the rest is cluster/follow.py) ---------------------------------

    def _behind(self) -> float:
        """Seconds the manager is behind reading its agents: this loop's, and the slowest worker's."""
        return self.lag.allowance() + (self.pool.behind() if self.pool is not None else 0.0)

    def _require_pool(self) -> WorkerPool:
        assert self.pool is not None
        return self.pool

    def stop(self) -> None:
        self._stop.set()

    def _signalled(self, signum: int) -> None:
        """The first SIGTERM or SIGINT stops (within the guard's deadline), a second one forces the exit."""
        name = signal.Signals(signum).name
        if self.stop_guard.armed:
            self.stop_guard.force(f"a second {name}")
            return
        log.info("%s received: stopping (a second SIGTERM or SIGINT forces the exit)", name)
        self.stop_guard.arm()
        self._stop.set()

    def send_to_agents(self, agent_ids: list[int], payload: bytes) -> int:
        """Send a control message to connected agents (wherever their connection is); returns how many
        were sent here, or all of them when workers hold the connections (they send to those they hold)."""
        if self.remoted is None:
            assert self.pool is not None
            self.pool.send_to_agents(agent_ids, payload)
            return len(agent_ids)
        return sum(self.remoted.outbound.send_to_agent(agent_id, payload) for agent_id in agent_ids)

    def _push(self, agent_id: int, md5: str, path: str) -> bool:
        """The rollout's pushes go to the remoted process holding the agent; False when none does."""
        if self.pushes is not None:
            if not self.pushes.holds(agent_id):
                return False
            self.pushes.push(agent_id, md5, path)
            return True
        holders = self.grace.holders(agent_id)
        if not holders and "udp" not in self.config.remote.protocols:
            return False  # not connected: the grace tracker knows every TCP connection
        # No holder known: a UDP agent (no connection to track), so every worker is asked.
        return self._require_pool().push(holders[-1] if holders else None, agent_id, md5, path)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            if self.remoted is not None:
                self.remoted.housekeeping()
            self.store.apply_adopted()
            self.sweeper.sweep()

    def listeners(self) -> list[str]:
        """Where agents connect: `host:port/protocol`, here or in the worker processes."""
        if self.remoted is None:
            assert self.pool is not None
            host = self.config.remote.local_ip or "0.0.0.0"
            return [f"{host}:{self.pool.port}/{p}" for p in self.config.remote.protocols]
        return [f"{host}:{port}/{proto}" for host, port, proto in self.remoted.addresses]

    async def _reloaded(self) -> None:
        if self.ready.is_set():
            await asyncio.to_thread(self._write_state_file)

    def _write_state_file(self) -> None:
        write_state_file(
            self.home.remoted_state, self.started_at, self.listeners(), self.key_reloads.counters
        )
